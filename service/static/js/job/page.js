// "#/jobs/<id>": one job. Its sections live in head.js, progress.js, results.js and plots.js; the loaders in
// load.js and the live updates in live.js, all sharing this page's context (`ctx`).

import { isAbort } from "../api.js";
import { el } from "../dom.js";
import { newView } from "../view.js";
import { follow } from "./live.js";
import { isTerminal, loadJob, loadResults } from "./load.js";
import { loadPlots, renderPlotShell } from "./plots.js";

export function jobPage(main, id) {
  const ctx = {
    v: newView(),
    id,
    base: `/jobs/${encodeURIComponent(id)}`,
    state: {
      job: null, // the JobRead
      result: null, // the JobResult (partial while the job runs)
      trials: new Map(), // trial_id -> {branch, is_control, status, epochs, last, best}
      live: "idle",
      resultsBusy: false,
      plotsBusy: false,
      outputsPending: false,
      jobPending: false,
    },
    sections: {
      head: el("div", { id: "job-head" }),
      progress: el("section", { id: "job-progress", "aria-labelledby": "progress-title" }),
      results: el("section", { id: "job-results", "aria-labelledby": "results-title" }),
      plots: el("section", { id: "job-plots", "aria-labelledby": "plots-title" }),
      spec: el("div", { id: "job-spec" }),
    },
    log: el("ol", { class: "event-log", id: "event-log", "aria-label": "Recent events" }),
    liveState: el("span", { class: "live-state muted", id: "live-state", "aria-live": "polite" }),
    trialsBody: el("tbody"),
  };
  const { sections } = ctx;
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
  start(ctx);
}

async function start(ctx) {
  try {
    const job = await loadJob(ctx);
    if (!job) return;
    renderPlotShell(ctx);
    await loadResults(ctx);
    loadPlots(ctx);
    if (!isTerminal(job.status)) follow(ctx);
  } catch (err) {
    if (isAbort(err) || ctx.v.stopped || err.status === 401) return;
    const text = err.status === 404 ? `Job ${ctx.id} not found.` : `Could not load job ${ctx.id}: ${err.message}`;
    ctx.sections.head.replaceChildren(el("h1", {}, "Job not available"), el("p", { class: "error-box" }, text));
  }
}
