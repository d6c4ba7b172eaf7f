// The job page's loaders: the job (JobRead) and its results, now or a little later.

import { getJson, isAbort } from "../api.js";
import { showMessage } from "../chrome.js";
import { later } from "../view.js";
import { renderHead } from "./head.js";
import { trialRows } from "./model.js";
import { loadPlots } from "./plots.js";
import { renderProgress } from "./progress.js";
import { renderResults } from "./results.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

/** GET /jobs/{id}, rendered; null once the view was left. */
export async function loadJob(ctx) {
  const job = await getJson(ctx.base, { signal: ctx.v.controller.signal });
  if (ctx.v.stopped) return null;
  ctx.state.job = job;
  renderHead(ctx);
  renderProgress(ctx);
  return job;
}

export async function loadResults(ctx) {
  const { state, v } = ctx;
  if (state.resultsBusy || v.stopped) return;
  state.resultsBusy = true;
  try {
    const result = await getJson(`${ctx.base}/results`, { signal: v.controller.signal });
    if (v.stopped) return;
    state.result = result;
    for (const [tid, row] of trialRows(result)) state.trials.set(tid, row);
    renderProgress(ctx);
    const running = state.job && !isTerminal(state.job.status);
    renderResults(ctx, result, running ? "Partial results: the job is still running." : "");
  } catch (err) {
    if (isAbort(err) || v.stopped || err.status === 401) return;
    if (err.status === 409 || err.status === 404) renderResults(ctx, null, "No results yet.");
    else renderResults(ctx, null, `Could not load the results: ${err.message}`);
  } finally {
    state.resultsBusy = false;
  }
}

/** The final state of a finished job: results and plots. */
export async function loadOutputs(ctx) {
  await loadResults(ctx);
  await loadPlots(ctx);
}

/** Results and plots are refreshed at most every few seconds while events stream in. */
export function refreshOutputsSoon(ctx, ms = 3000) {
  if (ctx.state.outputsPending) return;
  ctx.state.outputsPending = true;
  later(ctx.v, ms, async () => {
    ctx.state.outputsPending = false;
    await loadOutputs(ctx);
  });
}

export function refreshJobSoon(ctx, ms = 1000) {
  if (ctx.state.jobPending) return;
  ctx.state.jobPending = true;
  later(ctx.v, ms, async () => {
    ctx.state.jobPending = false;
    try {
      await loadJob(ctx);
    } catch (err) {
      if (!isAbort(err) && !ctx.v.stopped && err.status !== 401) showMessage(`Could not refresh the job: ${err.message}`);
    }
  });
}
