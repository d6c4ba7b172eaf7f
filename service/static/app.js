// Long-tail service web UI: vanilla JS (ES2020), no build step, no external resources.
// All text from the API is inserted with textContent (through el()), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "longtail.apiToken";
  const PLOT_KINDS = [
    ["per-class", "Per-class accuracy vs training count"],
    ["curves", "Metric per epoch"],
    ["shots", "Many / medium / few-shot accuracy"],
    ["calibration", "Reliability diagram"],
  ];
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const LIST_REFRESH_MS = 4000;
  const POLL_MS = 3000;
  const PAGE_SIZE = 50;
  const SHOWN_METRICS = new Set(["balanced_accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"]);
  const IGNORED_CONFIG_KEYS = new Set([
    "loss",
    "branch",
    "branch_index",
    "is_control",
    "sample_index",
    "trial_id",
    "config_id",
  ]);

  // ------------------------------------------------------------------------------------------------------------
  // Small helpers
  // ------------------------------------------------------------------------------------------------------------

  /** Create an element; string/number children become text nodes (never parsed as HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function isNum(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  function fmtNum(v, digits = 4) {
    return isNum(v) ? v.toFixed(digits) : "–";
  }

  function fmtPct(v) {
    return isNum(v) ? `${(v * 100).toFixed(1)}%` : "–";
  }

  /** A gain in accuracy (a fraction) as percentage points: 0.0705 -> "+7.05 pp". */
  function fmtPoints(v) {
    if (!isNum(v)) return "–";
    const s = (v * 100).toFixed(2);
    return `${v > 0 ? "+" : ""}${s} pp`;
  }

  /** "+5.2 ± 2.3 pp" (points) or "+0.0123 ± 0.0040": a gain and its standard deviation over seeds. */
  function fmtGain(v, std, asPoints) {
    if (!isNum(v)) return "–";
    const scale = asPoints ? 100 : 1;
    const digits = asPoints ? 1 : 4;
    const sign = v > 0 ? "+" : "";
    const spread = isNum(std) ? ` ± ${(std * scale).toFixed(digits)}` : "";
    return `${sign}${(v * scale).toFixed(digits)}${spread}${asPoints ? " pp" : ""}`;
  }

  /** "95% CI [+1.1, +9.3]" or "" without an interval (a single seed). */
  function fmtCi(ci, asPoints) {
    if (!Array.isArray(ci) || ci.length !== 2 || !isNum(ci[0]) || !isNum(ci[1])) return "";
    const scale = asPoints ? 100 : 1;
    const digits = asPoints ? 1 : 4;
    const one = (x) => `${x > 0 ? "+" : ""}${(x * scale).toFixed(digits)}`;
    return `95% CI [${one(ci[0])}, ${one(ci[1])}]`;
  }

  function fmtSigned(v, digits = 4) {
    if (!isNum(v)) return "–";
    const s = v.toFixed(digits);
    return v > 0 ? `+${s}` : s;
  }

  /** API time -> Date: the API sends unix seconds (float); an ISO 8601 string (UTC if no offset) works too. */
  function parseTime(t) {
    if (isNum(t)) return new Date(t * 1000);
    if (!t || typeof t !== "string") return null;
    const hasZone = /([zZ]|[+-]\d\d:?\d\d)$/.test(t);
    const d = new Date(hasZone ? t : `${t}Z`);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function fmtAge(t) {
    const d = parseTime(t);
    if (!d) return "–";
    const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function fmtDate(t) {
    const d = parseTime(t);
    return d ? d.toLocaleString() : "–";
  }

  function fmtDuration(from, to) {
    const a = parseTime(from);
    const b = to ? parseTime(to) : new Date();
    if (!a || !b) return "–";
    let s = Math.max(0, Math.round((b.getTime() - a.getTime()) / 1000));
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    return h ? `${h} h ${m} min` : m ? `${m} min ${s} s` : `${s} s`;
  }

  function timeEl(t, text) {
    const d = parseTime(t);
    return el("time", { datetime: d ? d.toISOString() : null, title: d ? d.toLocaleString() : null }, text);
  }

  /** "0.8528 balanced accuracy (ldam)" from a progress object's `best` ({trial_id, branch, epoch, value}). */
  function fmtBest(progress, withMetric = true) {
    const best = progress && progress.best;
    if (!best || !isNum(best.value)) return null;
    const metric = withMetric && progress.metric ? ` ${pretty(progress.metric)}` : "";
    return `${fmtNum(best.value)}${metric}${best.branch ? ` (${best.branch})` : ""}`;
  }

  function badge(status) {
    const s = String(status || "unknown");
    return el("span", { class: `badge status-${s.replace(/[^a-z_-]/gi, "")}` }, s);
  }

  function pretty(metric) {
    return String(metric || "").replace(/_/g, " ");
  }

  /** Flatten a config for a compact display: {"loss_params": {"gamma": 2}} -> "loss_params.gamma=2". */
  function flatConfig(config, prefix = "", out = []) {
    if (!config || typeof config !== "object") return out;
    for (const [key, value] of Object.entries(config)) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (value && typeof value === "object" && !Array.isArray(value)) flatConfig(value, name, out);
      else out.push([name, value]);
    }
    return out;
  }

  /** "control (ce)": the control trial's branch is "control" (or the loss name). */
  function controlLabel(trial) {
    const loss = trial && trial.config && typeof trial.config.loss === "string" ? trial.config.loss : null;
    const name = trial && trial.branch && trial.branch !== "control" ? trial.branch : loss || "ce";
    return `control (${name})`;
  }

  function fmtValue(v) {
    if (isNum(v)) return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  // ------------------------------------------------------------------------------------------------------------
  // API access (token auth, JSON errors)
  // ------------------------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  function setToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage unavailable (private mode): the token just is not kept */
    }
    updateAuthUi();
  }

  function authHeaders(extra) {
    const headers = { ...(extra || {}) };
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async function errorFrom(response) {
    let code = `http_${response.status}`;
    let message = `${response.status} ${response.statusText || "error"}`;
    let details = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
        details = body.error.details ?? null;
      } else if (body && body.detail) {
        message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch {
      /* not JSON */
    }
    return new ApiError(response.status, code, message, details);
  }

  /** fetch with the auth header; a 401 shows the token form. Resolves to the Response (ok) or throws ApiError. */
  async function request(path, { signal, accept = "application/json" } = {}) {
    let response;
    try {
      response = await fetch(path, { headers: authHeaders({ Accept: accept }), signal, cache: "no-store" });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "network", "Cannot reach the service (network error).", null);
    }
    if (response.ok) return response;
    const error = await errorFrom(response);
    if (response.status === 401) needToken(error.message);
    throw error;
  }

  async function getJson(path, opts) {
    const response = await request(path, opts);
    return response.json();
  }

  function isAbort(err) {
    return err && err.name === "AbortError";
  }

  // ------------------------------------------------------------------------------------------------------------
  // Page chrome: messages, token form, sign out
  // ------------------------------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function showMessage(text, kind = "error") {
    const box = $("message");
    if (!box) return;
    if (!text) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = text;
    box.className = kind === "info" ? "message info" : "message";
    box.hidden = false;
  }

  function updateAuthUi() {
    const has = Boolean(getToken());
    $("sign-out").hidden = !has;
    $("auth-state").hidden = !has;
  }

  let tokenWanted = false;
  /** Whether the service wants a token (from /healthz); null while unknown. */
  let authRequired = null;

  function needToken(reason) {
    if (tokenWanted) return;
    tokenWanted = true;
    stopView(); // no more polling with a rejected token
    const had = Boolean(getToken());
    $("token-reason").textContent = had
      ? `The API rejected the token${reason ? ` (${reason})` : ""}. Enter another one.`
      : "This service needs an API token. It is kept in this browser tab only (sessionStorage).";
    $("token-panel").hidden = false;
    $("main").replaceChildren();
    showMessage("");
    const input = $("token-input");
    input.value = "";
    input.focus();
  }

  function setupChrome() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      setToken(token);
      tokenWanted = false;
      $("token-panel").hidden = true;
      route();
    });
    $("sign-out").addEventListener("click", () => {
      setToken("");
      tokenWanted = false;
      $("token-panel").hidden = true;
      if (authRequired === true) needToken(null);
      else route();
    });
    updateAuthUi();
  }

  // ------------------------------------------------------------------------------------------------------------
  // Views and routing
  // ------------------------------------------------------------------------------------------------------------

  /** The current view's resources: an AbortController for its requests, timers and object URLs to free. */
  let view = null;

  function newView() {
    stopView();
    view = { controller: new AbortController(), timers: new Set(), urls: new Set(), stopped: false };
    return view;
  }

  function stopView() {
    if (!view) return;
    view.stopped = true;
    view.controller.abort();
    for (const t of view.timers) clearTimeout(t);
    for (const u of view.urls) URL.revokeObjectURL(u);
    view = null;
  }

  function later(v, ms, fn) {
    if (v.stopped) return;
    const t = setTimeout(() => {
      v.timers.delete(t);
      if (!v.stopped) fn();
    }, ms);
    v.timers.add(t);
  }

  function route() {
    if (tokenWanted) return;
    showMessage("");
    const hash = location.hash || "#/";
    const m = hash.match(/^#\/jobs\/([^/?#]+)\/?$/);
    const main = $("main");
    if (m) {
      let id;
      try {
        id = decodeURIComponent(m[1]);
      } catch {
        id = m[1];
      }
      jobPage(main, id);
    } else {
      jobsPage(main);
    }
  }

  // ------------------------------------------------------------------------------------------------------------
  // #/ : the jobs list
  // ------------------------------------------------------------------------------------------------------------

  const listState = { status: "", pages: 1 };

  function jobsPage(main) {
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
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col" }, "Name"),
            el("th", { scope: "col" }, "Status"),
            el("th", { scope: "col", class: "num" }, "Trials done / total"),
            el("th", { scope: "col", class: "num" }, "Best metric"),
            el("th", { scope: "col" }, "Created"),
          ),
        ),
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

  // ------------------------------------------------------------------------------------------------------------
  // #/jobs/<id> : one job
  // ------------------------------------------------------------------------------------------------------------

  function jobPage(main, id) {
    const v = newView();
    const base = `/jobs/${encodeURIComponent(id)}`;
    const state = {
      job: null,
      result: null,
      trials: new Map(), // trial_id -> {branch, is_control, status, epochs, last, best}
      live: "idle",
      resultsBusy: false,
      plotsBusy: false,
      lastProgressKey: "",
    };

    const sections = {
      head: el("div", { id: "job-head" }),
      progress: el("section", { id: "job-progress", "aria-labelledby": "progress-title" }),
      results: el("section", { id: "job-results", "aria-labelledby": "results-title" }),
      plots: el("section", { id: "job-plots", "aria-labelledby": "plots-title" }),
      spec: el("div", { id: "job-spec" }),
    };
    const log = el("ol", { class: "event-log", id: "event-log", "aria-label": "Recent events" });
    const liveState = el("span", { class: "live-state muted", id: "live-state", "aria-live": "polite" });
    const trialsBody = el("tbody");

    main.replaceChildren(
      el(
        "div",
        { id: "job-page", dataset: { jobId: id } },
        el("p", {}, el("a", { href: "#/" }, "← All jobs")),
        sections.head,
        sections.spec,
        sections.progress,
        sections.results,
        sections.plots,
      ),
    );
    sections.head.append(el("h1", {}, `Job ${id}`), el("p", { class: "muted" }, "Loading…"));

    // --- rendering -------------------------------------------------------------------------------------------

    function renderHead() {
      const job = state.job;
      document.title = `${job.name || job.id} · Long-tail service`;
      const meta = el("dl", { class: "meta" });
      const add = (k, ...vals) => meta.append(el("dt", {}, k), el("dd", {}, ...vals));
      add("Id", el("code", {}, job.id));
      if (job.owner) add("Owner", job.owner);
      add("Created", timeEl(job.created_at, `${fmtDate(job.created_at)} (${fmtAge(job.created_at)})`));
      if (job.started_at) add("Started", timeEl(job.started_at, fmtDate(job.started_at)));
      if (job.finished_at) add("Finished", timeEl(job.finished_at, fmtDate(job.finished_at)));
      if (job.started_at) add("Duration", fmtDuration(job.started_at, job.finished_at));
      const spec = job.spec || {};
      const p = job.progress || {};
      if (spec.dataset && spec.dataset.name) add("Dataset", spec.dataset.name);
      if (p.metric) add("Search", `${p.trials_total ?? "?"} trials, ${p.mode === "min" ? "minimising" : "maximising"} ${pretty(p.metric)}`);
      sections.head.replaceChildren();
      append(sections.head, [
        el("div", { class: "job-head" }, el("h1", {}, job.name || job.id), badge(job.status)),
        meta,
        job.error ? el("div", { class: "error-box", role: "status" }, `Error: ${job.error}`) : null,
      ]);
      if (!sections.spec.firstChild) {
        sections.spec.append(
          el(
            "details",
            { class: "spec" },
            el("summary", {}, "Job spec"),
            el("pre", { id: "job-spec-json" }, JSON.stringify(job.spec ?? {}, null, 2)),
          ),
        );
      }
    }

    function renderProgress() {
      const job = state.job;
      const p = (job && job.progress) || {};
      const total = isNum(p.trials_total) ? p.trials_total : null;
      const done = isNum(p.trials_done) ? p.trials_done : 0;
      const bar = el("progress", { id: "trials-progress", max: total || 1, value: total ? Math.min(done, total) : 0 });
      bar.setAttribute("aria-label", "Trials done");
      const facts = [
        `${done}/${total ?? "?"} trials done`,
        isNum(p.trials_running) ? `${p.trials_running} running` : null,
        isNum(p.epochs_reported) ? `${p.epochs_reported} epochs reported` : null,
        fmtBest(p) ? `best ${fmtBest(p)}` : null,
      ].filter(Boolean);
      const children = [
        el("h2", { id: "progress-title" }, "Progress"),
        el("div", { class: "progress-line" }, bar, el("span", {}, facts.join(" · ")), liveState),
      ];
      if (state.trials.size) {
        children.push(
          el(
            "table",
            { id: "trials-table" },
            el(
              "thead",
              {},
              el(
                "tr",
                {},
                el("th", { scope: "col" }, "Trial"),
                el("th", { scope: "col" }, "Branch"),
                el("th", { scope: "col" }, "Status"),
                el("th", { scope: "col", class: "num" }, "Epochs"),
                el("th", { scope: "col", class: "num" }, `Last ${pretty(metricName())}`),
                el("th", { scope: "col", class: "num" }, `Best ${pretty(metricName())}`),
              ),
            ),
            trialsBody,
          ),
        );
        renderTrials();
      }
      if (log.childElementCount) children.push(el("h2", {}, "Recent events"), log);
      sections.progress.replaceChildren(...children);
    }

    function renderTrials() {
      const rows = Array.from(state.trials.entries()).map(([tid, t]) =>
        el(
          "tr",
          { class: "trial-row", dataset: { trialId: tid } },
          el("td", {}, el("code", {}, tid)),
          el("td", {}, t.is_control ? controlLabel(t) : t.branch || "–"),
          el("td", {}, badge(t.status || "running")),
          el("td", { class: "num" }, String(t.epochs || 0)),
          el("td", { class: "num" }, fmtNum(t.last)),
          el("td", { class: "num" }, fmtNum(t.best)),
        ),
      );
      trialsBody.replaceChildren(...rows);
    }

    function metricName() {
      return (state.result && state.result.metric) || (state.job && state.job.progress && state.job.progress.metric) || "";
    }

    function metricMode() {
      const mode = state.result && state.result.mode;
      if (mode === "min" || mode === "max") return mode;
      const spec = state.job && state.job.spec;
      return spec && spec.mode === "min" ? "min" : "max";
    }

    function better(a, b) {
      if (!isNum(a)) return false;
      if (!isNum(b)) return true;
      return metricMode() === "min" ? a < b : a > b;
    }

    function logEvent(text) {
      const time = new Date().toLocaleTimeString();
      log.prepend(el("li", {}, `${time}  ${text}`));
      while (log.childElementCount > 50) log.lastElementChild.remove();
      if (!log.isConnected) renderProgress();
    }

    function trialsFromResult(result) {
      for (const t of (result && result.trials) || []) {
        if (!t || !t.trial_id) continue;
        const metric = result.metric;
        const history = Array.isArray(t.history) ? t.history : [];
        const last = history.length ? history[history.length - 1][metric] : null;
        const bestValue = t.best && isNum(t.best.value) ? t.best.value : null;
        state.trials.set(String(t.trial_id), {
          branch: t.branch,
          is_control: Boolean(t.is_control),
          status: t.status,
          epochs: history.length,
          last: isNum(last) ? last : null,
          best: bestValue,
        });
      }
    }

    /** Rows of the results table: one per loss branch (+ the control), from `branches` or derived from trials. */
    function branchRows(result) {
      const trials = Array.isArray(result.trials) ? result.trials : [];
      const byId = new Map(trials.map((t) => [t.trial_id, t]));
      const control =
        byId.get(result.control_trial_id) || trials.find((t) => t && t.is_control) || null;
      const controlBest = control && control.best ? control.best : null;
      const controlValue = controlBest && isNum(controlBest.value) ? controlBest.value : null;
      let rows = [];
      if (Array.isArray(result.branches) && result.branches.length) {
        rows = result.branches
          .filter((b) => b && !(b.best_trial_id && b.best_trial_id === result.control_trial_id))
          .map((b) => {
            const trial = byId.get(b.best_trial_id);
            return {
              branch: b.branch,
              trialId: b.best_trial_id,
              metrics: b.best_metrics || (trial && trial.best && trial.best.metrics) || {},
              value: b.best_value,
              controlValue: isNum(b.control_value) ? b.control_value : controlValue,
              gain: isNum(b.gain) ? b.gain : null,
              gainStd: isNum(b.gain_std) ? b.gain_std : null,
              ci: Array.isArray(b.gain_ci95) ? b.gain_ci95 : null,
              significant: b.significant === true,
              seeds: isNum(b.n_seeds) ? b.n_seeds : null,
              config: b.config || (trial ? trial.config : b.best_config || null),
            };
          });
      } else {
        // Partial result (job still running): the best trial of each branch so far.
        const best = new Map();
        for (const t of trials) {
          if (!t || t.is_control || t.trial_id === result.control_trial_id || !t.best || !isNum(t.best.value)) continue;
          const key = `${t.branch_index ?? ""}:${t.branch}`;
          if (!best.has(key) || better(t.best.value, best.get(key).best.value)) best.set(key, t);
        }
        rows = Array.from(best.values())
          .sort((a, b) => (a.branch_index ?? 0) - (b.branch_index ?? 0))
          .map((t) => ({
            branch: t.branch,
            trialId: t.trial_id,
            metrics: t.best.metrics || {},
            value: t.best.value,
            controlValue,
            gain: isNum(controlValue) ? t.best.value - controlValue : null,
            config: t.config,
          }));
      }
      if (controlBest) {
        const seeds = trials.filter((t) => t && t.is_control && t.best && t.best.metrics && isNum(t.best.value));
        // With repeats the control's figures are its mean over seeds, as the branches' are.
        const metrics = { ...(controlBest.metrics || {}) };
        if (seeds.length > 1) {
          for (const key of SHOWN_METRICS) {
            const values = seeds.map((t) => t.best.metrics[key]);
            if (values.every(isNum)) metrics[key] = values.reduce((a, b) => a + b, 0) / values.length;
          }
        }
        rows.push({
          branch: controlLabel(control),
          trialId: control.trial_id,
          seeds: seeds.length || null,
          metrics,
          value: controlBest.value,
          controlValue: null,
          gain: null,
          config: control.config,
          isControl: true,
        });
        const ph = result.control_posthoc;
        if (ph && isNum(ph.test_mean)) {
          // "CE + post-hoc LA": the control's logits adjusted by -tau log(prior), tau chosen on validation.
          rows.push({
            branch: `CE + post-hoc LA (tau ${ph.tau})`,
            trialId: null, // the control's own trial: not marked best a second time
            seeds: isNum(ph.n_seeds) ? ph.n_seeds : null,
            metrics: ph.metrics || {},
            value: ph.test_mean,
            controlValue: controlValue,
            gain: isNum(ph.gain) ? ph.gain : null,
            gainStd: isNum(ph.gain_std) ? ph.gain_std : null,
            ci: Array.isArray(ph.gain_ci95) ? ph.gain_ci95 : null,
            significant: Array.isArray(ph.gain_ci95) && (ph.gain_ci95[0] > 0 || ph.gain_ci95[1] < 0),
            config: control.config,
          });
        }
      }
      return rows;
    }

    /**
     * The config keys worth a column of text: the loss parameters and whatever differs between trials (a key
     * missing from some trials counts as differing); seeds, names and keys equal in every trial are left out.
     * Works for the driver's flat search config ({"loss.gamma": 2, "reweighting": "none"}) and nested ones.
     */
    function configKeysToShow(result) {
      const trials = (result.trials || []).filter((t) => t && t.config && typeof t.config === "object");
      const values = new Map();
      for (const t of trials) {
        for (const [k, val] of flatConfig(t.config)) {
          if (!values.has(k)) values.set(k, { seen: new Set(), count: 0 });
          const entry = values.get(k);
          entry.seen.add(JSON.stringify(val));
          entry.count += 1;
        }
      }
      const keys = new Set();
      for (const [k, { seen, count }] of values) {
        const leaf = k.split(".").pop();
        if (/seed/i.test(leaf) || IGNORED_CONFIG_KEYS.has(leaf)) continue;
        if (seen.size > 1 || count < trials.length || /^loss[_.]?(params|kwargs)?\./.test(k)) keys.add(k);
      }
      return keys;
    }

    /** "gamma=2, reweighting=effective_number-drw": the shown keys, the loss_params. prefix and defaults dropped. */
    function configText(config, shown) {
      return flatConfig(config || {})
        .filter(([k, val]) => shown.has(k) && !(k === "reweighting" && val === "none"))
        .map(([k, val]) => `${k.replace(/^(loss_params|loss)\./, "")}=${fmtValue(val)}`)
        .join(", ");
    }

    function renderResults(result, note) {
      const children = [el("h2", { id: "results-title" }, "Results per loss branch")];
      if (!result) {
        children.push(el("p", { class: "muted", id: "results-empty" }, note || "No results yet."));
        sections.results.replaceChildren(...children);
        return;
      }
      const rows = branchRows(result);
      if (!rows.length) {
        children.push(el("p", { class: "muted", id: "results-empty" }, "No trial has reported a best epoch yet."));
        sections.results.replaceChildren(...children);
        return;
      }
      const metric = result.metric || metricName();
      // The search metric gets its own column unless it is one of the four accuracy columns already there.
      const extraMetric = !SHOWN_METRICS.has(metric);
      const asPoints = /accuracy$/.test(metric) && metricMode() === "max";
      const bestId = result.best_trial && result.best_trial.trial_id;
      const onTest = result.selected_on !== "val";
      // Figures chosen on the split they report are labelled as such in every column that shows one.
      const onTestLabel = () => (onTest ? el("div", { class: "ci" }, "selected on test") : null);
      const shown = configKeysToShow(result);
      const body = rows.map((r) => {
        const m = r.metrics || {};
        let gainCell;
        if (r.isControl) {
          gainCell = el("td", { class: "num gain-zero" }, "reference");
        } else {
          // The gain is signed so that positive is better in the metric's mode (paired with the control by seed).
          const improved = isNum(r.gain) ? r.gain > 0 : better(r.value, r.controlValue);
          const worse = isNum(r.gain)
            ? r.gain < 0
            : isNum(r.controlValue) && isNum(r.value) && better(r.controlValue, r.value);
          const cls = improved ? "gain-pos" : worse ? "gain-neg" : "gain-zero";
          const label = improved ? "better than control" : worse ? "worse than control" : "same as control";
          let gain = asPoints ? fmtPoints(r.gain) : fmtSigned(r.gain);
          if (isNum(r.gainStd) || r.ci) gain = fmtGain(r.gain, r.gainStd, asPoints);
          const ci = fmtCi(r.ci, asPoints);
          const sig = r.significant ? " · significant: the 95% CI excludes 0" : "";
          gainCell = el(
            "td",
            { class: `num ${cls}${r.significant ? " significant" : ""}`, title: `${label} (${pretty(metric)})${sig}` },
            gain,
            r.significant ? el("span", { class: "sig-mark", title: "the 95% CI excludes 0" }, " ✓") : null,
            ci ? el("div", { class: "ci" }, ci) : null,
          );
        }
        const text = configText(r.config, shown);
        return el(
          "tr",
          {
            class: `branch-row${r.isControl ? " control-row" : ""}${r.trialId === bestId ? " best-row" : ""}`,
            dataset: { branch: String(r.branch), trialId: String(r.trialId || "") },
          },
          el("td", {}, r.branch, r.trialId === bestId ? el("span", { class: "muted" }, " ★ best") : null),
          el("td", { class: "num" }, fmtPct(m.balanced_accuracy)),
          el("td", { class: "num" }, fmtPct(m.many_shot_accuracy)),
          el("td", { class: "num" }, fmtPct(m.medium_shot_accuracy)),
          el("td", { class: "num" }, fmtPct(m.few_shot_accuracy)),
          extraMetric ? el("td", { class: "num" }, fmtNum(r.value)) : null,
          gainCell,
          el("td", { class: "num seeds" }, isNum(r.seeds) ? String(r.seeds) : "–"),
          el("td", { class: "config" }, text ? el("code", { title: JSON.stringify(r.config) }, text) : "–"),
        );
      });
      children.push(
        el(
          "table",
          { id: "results-table" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", { scope: "col" }, "Branch"),
              el("th", { scope: "col", class: "num" }, "Balanced acc.", onTestLabel()),
              el("th", { scope: "col", class: "num" }, "Many-shot", onTestLabel()),
              el("th", { scope: "col", class: "num" }, "Medium-shot", onTestLabel()),
              el("th", { scope: "col", class: "num" }, "Few-shot", onTestLabel()),
              extraMetric ? el("th", { scope: "col", class: "num" }, pretty(metric) || "metric") : null,
              el(
                "th",
                {
                  scope: "col",
                  class: "num",
                  title: `Gain in ${pretty(metric)} over the control: mean ± std of the paired differences by seed`,
                },
                "Gain vs control",
                onTestLabel(),
              ),
              el("th", { scope: "col", class: "num", title: "Seeds (repeats) behind the row" }, "Seeds"),
              el("th", { scope: "col" }, "Best config"),
            ),
          ),
          el("tbody", {}, body),
        ),
      );
      children.push(el("p", { class: "muted", id: "results-selection" }, selectionText(result)));
      if (rows.some((r) => r.significant)) {
        children.push(el("p", { class: "muted" }, "✓ the 95% confidence interval of the gain excludes 0."));
      }
      if (note) children.push(el("p", { class: "muted" }, note));
      sections.results.replaceChildren(...children);
    }

    /** What every figure of the table was selected on (the results' selected_on; an old result: on test). */
    function selectionText(result) {
      const repeats = isNum(result.repeats) ? result.repeats : 1;
      const seeds = `${repeats} seed${repeats === 1 ? "" : "s"} per config`;
      if (result.selected_on === "val") {
        return (
          `Selected on validation: each trial's epoch, each branch's config (best mean over its seeds) and the best ` +
          `trial were chosen on the validation split; the test figures shown are only reported (${seeds}). ` +
          "Gain: mean ± std of the paired differences with the control of the same seed."
        );
      }
      return (
        `Selected on test: every figure here was chosen on the test split it reports (${seeds}), ` +
        "as in the published protocol; these figures are optimistic."
      );
    }

    function renderPlotShell() {
      if (sections.plots.firstChild) return;
      const grid = el("div", { class: "plots" });
      for (const [kind, title] of PLOT_KINDS) {
        grid.append(
          el(
            "figure",
            { id: `plot-${kind}`, dataset: { kind } },
            el("figcaption", {}, title),
            el("p", { class: "plot-missing" }, "Loading…"),
          ),
        );
      }
      sections.plots.append(el("h2", { id: "plots-title" }, "Plots"), grid);
    }

    // --- loading ---------------------------------------------------------------------------------------------

    async function loadJob() {
      const job = await getJson(base, { signal: v.controller.signal });
      if (v.stopped) return null;
      state.job = job;
      renderHead();
      renderProgress();
      return job;
    }

    async function loadResults() {
      if (state.resultsBusy || v.stopped) return;
      state.resultsBusy = true;
      try {
        const result = await getJson(`${base}/results`, { signal: v.controller.signal });
        if (v.stopped) return;
        state.result = result;
        trialsFromResult(result);
        renderProgress();
        const running = state.job && !TERMINAL.has(state.job.status);
        renderResults(result, running ? "Partial results: the job is still running." : "");
      } catch (err) {
        if (isAbort(err) || v.stopped || err.status === 401) return;
        if (err.status === 409 || err.status === 404) renderResults(null, "No results yet.");
        else renderResults(null, `Could not load the results: ${err.message}`);
      } finally {
        state.resultsBusy = false;
      }
    }

    async function loadPlot(kind) {
      const figure = document.getElementById(`plot-${kind}`);
      if (!figure) return;
      const title = PLOT_KINDS.find(([k]) => k === kind)[1];
      const setBody = (node) => {
        const caption = figure.querySelector("figcaption");
        figure.replaceChildren(caption, node);
      };
      try {
        const response = await request(`${base}/plots/${kind}.png`, { signal: v.controller.signal, accept: "image/png" });
        const blob = await response.blob();
        if (v.stopped) return;
        const url = URL.createObjectURL(blob);
        v.urls.add(url);
        const img = el("img", { class: "plot", src: url, alt: `${title} (plot)`, dataset: { kind }, width: 900, height: 550 });
        img.addEventListener("load", () => {
          img.dataset.loaded = "true";
        });
        const old = figure.querySelector("img.plot");
        setBody(img);
        const caption = figure.querySelector("figcaption");
        caption.replaceChildren(title, el("a", { href: url, download: `${id}-${kind}.png` }, "download"));
        if (old && old.src && v.urls.has(old.src)) {
          URL.revokeObjectURL(old.src);
          v.urls.delete(old.src);
        }
      } catch (err) {
        if (isAbort(err) || v.stopped || err.status === 401) return;
        if (figure.querySelector("img.plot") && err.status !== 409) return; // keep the last good image
        const text = err.status === 409 ? "No finished trial yet." : `Could not load the plot: ${err.message}`;
        setBody(el("p", { class: "plot-missing", dataset: { kind, status: String(err.status) } }, text));
      }
    }

    async function loadPlots() {
      if (state.plotsBusy || v.stopped) return;
      state.plotsBusy = true;
      try {
        renderPlotShell();
        // The plots answer 409 until a trial reported an epoch: do not ask before (a 409 is a console error).
        const p = state.job && state.job.progress;
        if (p && p.epochs_reported === 0) {
          for (const [kind] of PLOT_KINDS) {
            const figure = document.getElementById(`plot-${kind}`);
            if (!figure || figure.querySelector("img.plot")) continue;
            figure.replaceChildren(
              figure.querySelector("figcaption"),
              el("p", { class: "plot-missing", dataset: { kind, status: "waiting" } }, "No epoch reported yet."),
            );
          }
          return;
        }
        await Promise.all(PLOT_KINDS.map(([kind]) => loadPlot(kind)));
      } finally {
        state.plotsBusy = false;
      }
    }

    // Results and plots are refreshed at most every few seconds while events stream in.
    let refreshPending = false;
    function refreshOutputsSoon(ms = 3000) {
      if (refreshPending) return;
      refreshPending = true;
      later(v, ms, async () => {
        refreshPending = false;
        await loadResults();
        await loadPlots();
      });
    }

    let jobPending = false;
    function refreshJobSoon(ms = 1000) {
      if (jobPending) return;
      jobPending = true;
      later(v, ms, async () => {
        jobPending = false;
        try {
          await loadJob();
        } catch (err) {
          if (!isAbort(err) && !v.stopped && err.status !== 401) showMessage(`Could not refresh the job: ${err.message}`);
        }
      });
    }

    function setLive(text) {
      state.live = text;
      liveState.textContent = text;
    }

    // --- live progress: SSE over fetch (EventSource cannot send the Authorization header) -----------------------

    // Event types as stored by the service: "status" ({status, error, time}) and the driver's "trial_started",
    // "epoch", "trial_finished", "job_finished" ({result}), "job_failed" ({error}). The stream first replays the
    // stored events, so nothing here adds to counters: the job's progress is re-read from /jobs/{id} instead.
    function handleEvent(type, data) {
      if (!data || typeof data !== "object") return;
      if (type === "status") {
        if (state.job && typeof data.status === "string") {
          state.job.status = data.status;
          if (data.error) state.job.error = data.error;
          renderHead();
          renderProgress();
        }
        if (typeof data.status === "string") logEvent(`job ${data.status}${data.error ? `: ${data.error}` : ""}`);
        refreshJobSoon();
        if (TERMINAL.has(data.status)) refreshOutputsSoon(200);
      } else if (type === "epoch") {
        const tid = String(data.trial_id ?? "");
        const t = state.trials.get(tid) || { status: "running", epochs: 0, last: null, best: null };
        const metrics = data.metrics || {};
        const value = metrics[metricName()];
        t.epochs = Math.max(t.epochs || 0, isNum(data.epoch) ? data.epoch : 0);
        if (isNum(value)) {
          t.last = value;
          if (better(value, t.best)) t.best = value;
        }
        state.trials.set(tid, t);
        renderProgress();
        logEvent(`trial ${tid} epoch ${data.epoch ?? "?"}${isNum(value) ? `: ${pretty(metricName())} ${fmtNum(value)}` : ""}`);
        refreshJobSoon(2000);
        refreshOutputsSoon(5000);
      } else if (type === "trial_started") {
        const tid = String(data.trial_id ?? "");
        const t = state.trials.get(tid) || { status: "running", epochs: 0, last: null, best: null };
        Object.assign(t, { branch: data.branch, is_control: Boolean(data.is_control), config: data.config });
        if (!t.status || t.status === "pending") t.status = "running";
        state.trials.set(tid, t);
        logEvent(`trial ${tid} started (${data.branch ?? "?"}${data.is_control ? ", control" : ""})`);
        renderProgress();
        refreshJobSoon();
      } else if (type === "trial_finished") {
        const tid = String(data.trial_id ?? "");
        const t = state.trials.get(tid) || { status: "running", epochs: 0, last: null, best: null };
        t.status = typeof data.status === "string" ? data.status : "succeeded";
        state.trials.set(tid, t);
        logEvent(`trial ${tid} ${t.status}${data.error ? `: ${data.error}` : ""}`);
        renderProgress();
        refreshJobSoon();
        refreshOutputsSoon();
      } else if (type === "job_finished") {
        logEvent("job finished: final results received");
        refreshJobSoon(200);
        refreshOutputsSoon(200);
      } else if (type === "job_failed") {
        logEvent(`job failed${data.error ? `: ${data.error}` : ""}`);
        refreshJobSoon(200);
      }
    }

    function dispatch(raw) {
      let type = "message";
      const dataLines = [];
      for (const line of raw.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") dataLines.push(value);
      }
      if (!dataLines.length) return;
      let data;
      try {
        data = JSON.parse(dataLines.join("\n"));
      } catch {
        return; // not JSON: ignore
      }
      handleEvent(type, data);
    }

    async function stream() {
      setLive("connecting to live updates…");
      const response = await request(`${base}/events`, { signal: v.controller.signal, accept: "text/event-stream" });
      if (!response.body || typeof response.body.getReader !== "function") throw new Error("streaming not supported");
      setLive("live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (v.stopped) {
          reader.cancel().catch(() => {});
          return;
        }
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) !== -1) {
          const raw = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          dispatch(raw);
        }
      }
      buffer += decoder.decode();
      if (buffer.trim()) dispatch(buffer.replace(/\r\n?/g, "\n"));
    }

    async function poll() {
      if (v.stopped) return;
      try {
        const before = state.job ? `${state.job.status}|${JSON.stringify(state.job.progress || {})}` : "";
        const job = await loadJob();
        if (!job) return;
        const now = `${job.status}|${JSON.stringify(job.progress || {})}`;
        if (now !== before) await loadResults();
        if (TERMINAL.has(job.status)) {
          setLive("");
          await loadResults();
          await loadPlots();
          return;
        }
        if (now !== before) loadPlots();
      } catch (err) {
        if (isAbort(err) || v.stopped || err.status === 401) return;
        setLive(`polling (last attempt failed: ${err.message})`);
      }
      later(v, POLL_MS, poll);
    }

    async function follow() {
      try {
        await stream();
        if (v.stopped) return;
        // The stream ends when the job finishes: take the final state.
        const job = await loadJob();
        if (job && TERMINAL.has(job.status)) {
          setLive("");
          await loadResults();
          await loadPlots();
          return;
        }
        setLive("live stream ended; polling every 3 s");
      } catch (err) {
        if (isAbort(err) || v.stopped || err.status === 401) return;
        setLive("live stream unavailable; polling every 3 s");
      }
      later(v, POLL_MS, poll);
    }

    // --- start -----------------------------------------------------------------------------------------------

    (async () => {
      try {
        const job = await loadJob();
        if (!job) return;
        renderPlotShell();
        await loadResults();
        loadPlots();
        if (!TERMINAL.has(job.status)) follow();
      } catch (err) {
        if (isAbort(err) || v.stopped || err.status === 401) return;
        const text = err.status === 404 ? `Job ${id} not found.` : `Could not load job ${id}: ${err.message}`;
        sections.head.replaceChildren(el("h1", {}, "Job not available"), el("p", { class: "error-box" }, text));
      }
    })();
  }

  // ------------------------------------------------------------------------------------------------------------

  function start() {
    setupChrome();
    window.addEventListener("hashchange", () => {
      route();
      const main = $("main");
      if (main) main.focus({ preventScroll: true });
    });
    window.addEventListener("unhandledrejection", (event) => {
      // Every request is guarded; this only keeps an unexpected rejection from reaching the console unexplained.
      if (isAbort(event.reason)) event.preventDefault();
    });
    firstRoute();
  }

  /**
   * Without a stored token, ask the public /healthz first: a service that says `"auth": true` there gets the token
   * form straight away, without a 401 from the API (which the browser would log as a console error). A service
   * that does not say (older ones) is simply tried: a 401 shows the form then.
   */
  async function firstRoute() {
    if (!getToken()) {
      try {
        const response = await fetch("/healthz", { headers: { Accept: "application/json" }, cache: "no-store" });
        const body = response.ok ? await response.json() : null;
        if (body && typeof body.auth === "boolean") authRequired = body.auth;
      } catch {
        /* unknown: the API call below tells */
      }
      if (authRequired === true) {
        needToken(null);
        return;
      }
    }
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
