// The job page's head: name, status, facts, error, and the spec (collapsed).

import { append, badge, el, timeEl } from "../dom.js";
import { fmtAge, fmtDate, fmtDuration, pretty } from "../format.js";

export function renderHead(ctx) {
  const { job } = ctx.state;
  const { sections } = ctx;
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
