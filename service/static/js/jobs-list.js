// "#/": the jobs list, refreshed every few seconds while the tab is visible.

import { getJson, isAbort } from "./api.js";
import { showMessage } from "./chrome.js";
import { badge, el, headRow, timeEl } from "./dom.js";
import { fmtAge, fmtBest, isNum } from "./format.js";
import { later, newView } from "./view.js";

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const LIST_REFRESH_MS = 4000;
const PAGE_SIZE = 50;

/** Kept across visits of the list: the status filter and how many pages were loaded. */
const listState = { status: "", pages: 1 };

export function jobsPage(main) {
  const v = newView();
  document.title = "Jobs · Long-tail service";
  const tbody = el("tbody", {}, el("tr", {}, el("td", { class: "empty", colspan: 5 }, "Loading jobs…")));
  const filter = el(
    "select",
    { id: "status-filter" },
    el("option", { value: "" }, "all"),
    STATUSES.map((s) => el("option", { value: s }, s)),
  );
  filter.value = listState.status;
  const updated = el("span", { class: "muted", "aria-live": "polite" });
  const more = el("button", { type: "button", class: "secondary", id: "load-more", hidden: true }, "Load more");
  const refreshBtn = el("button", { type: "button", class: "secondary", id: "refresh-jobs" }, "Refresh");

  main.replaceChildren(
    el("h1", {}, "Jobs"),
    el(
      "div",
      { class: "toolbar" },
      el("label", { for: "status-filter" }, "Status"),
      filter,
      refreshBtn,
      el("span", { class: "spacer" }),
      updated,
    ),
    el(
      "table",
      { id: "jobs-table", "aria-label": "Jobs" },
      headRow(["Name", "Status", ["Trials done / total", { class: "num" }], ["Best metric", { class: "num" }], "Created"]),
      tbody,
    ),
    el("div", { class: "toolbar" }, more),
  );

  let busy = false;
  async function load() {
    if (busy || v.stopped) return;
    busy = true;
    try {
      const jobs = [];
      let cursor = null;
      let next = null;
      for (let page = 0; page < listState.pages; page++) {
        const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
        if (listState.status) params.set("status", listState.status);
        if (cursor) params.set("cursor", cursor);
        const data = await getJson(`/jobs?${params}`, { signal: v.controller.signal });
        jobs.push(...(Array.isArray(data.items) ? data.items : []));
        next = data.next_cursor || null;
        if (!next) break;
        cursor = next;
      }
      if (v.stopped) return;
      renderRows(tbody, jobs);
      more.hidden = !next;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      showMessage("");
    } catch (err) {
      if (isAbort(err) || v.stopped) return;
      if (err.status === 401) return;
      showMessage(`Could not load the jobs: ${err.message}`);
    } finally {
      busy = false;
    }
    schedule();
  }

  function schedule() {
    for (const t of v.timers) clearTimeout(t);
    v.timers.clear();
    later(v, LIST_REFRESH_MS, () => (document.hidden ? schedule() : load()));
  }

  filter.addEventListener("change", () => {
    listState.status = filter.value;
    listState.pages = 1;
    load();
  });
  refreshBtn.addEventListener("click", () => load());
  more.addEventListener("click", () => {
    listState.pages += 1;
    load();
  });
  load();
}

function renderRows(tbody, jobs) {
  if (!jobs.length) {
    const msg = listState.status ? `No ${listState.status} jobs.` : "No jobs yet.";
    tbody.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan: 5 }, msg)));
    return;
  }
  // Keep the focused link focused across refreshes.
  const focusedId = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.jobId : null;
  const rows = jobs.map((job) => {
    const p = job.progress || {};
    const total = isNum(p.trials_total) ? p.trials_total : "?";
    const done = isNum(p.trials_done) ? p.trials_done : 0;
    const running = isNum(p.trials_running) && p.trials_running > 0 ? ` (${p.trials_running} running)` : "";
    const best = fmtBest(p) || "–";
    const link = el(
      "a",
      { class: "job-link", href: `#/jobs/${encodeURIComponent(job.id)}`, dataset: { jobId: String(job.id) } },
      job.name || job.id,
    );
    return el(
      "tr",
      { class: "job-row", dataset: { jobId: String(job.id), status: String(job.status || "") } },
      el("td", {}, link, job.owner ? el("div", { class: "muted" }, job.owner) : null),
      el("td", {}, badge(job.status)),
      el("td", { class: "num" }, `${done}/${total}${running}`),
      el("td", { class: "num" }, best),
      el("td", {}, timeEl(job.created_at, fmtAge(job.created_at))),
    );
  });
  tbody.replaceChildren(...rows);
  if (focusedId) {
    const again = Array.from(tbody.querySelectorAll("a.job-link")).find((a) => a.dataset.jobId === focusedId);
    if (again) again.focus();
  }
}
