// The job page's live updates: the event stream (SSE over fetch), polling where it is not available.

import { isAbort, readEvents, request } from "../api.js";
import { fmtNum, isNum, pretty } from "../format.js";
import { later } from "../view.js";
import { renderHead } from "./head.js";
import { isTerminal, loadJob, loadOutputs, loadResults, refreshJobSoon, refreshOutputsSoon } from "./load.js";
import { isBetter, metricName, progressKey, resolveMode } from "./model.js";
import { loadPlots } from "./plots.js";
import { logEvent, renderProgress } from "./progress.js";

const POLL_MS = 3000;

export function setLive(ctx, text) {
  ctx.state.live = text;
  ctx.liveState.textContent = text;
}

function trialState(ctx, tid) {
  return ctx.state.trials.get(tid) || { status: "running", epochs: 0, last: null, best: null };
}

// Event types as stored by the service: "status" ({status, error, time}) and the driver's "trial_started",
// "epoch", "trial_finished", "job_finished" ({result}), "job_failed" ({error}). The stream first replays the
// stored events, so nothing here adds to counters: the job's progress is re-read from /jobs/{id} instead.
function handleEvent(ctx, type, data) {
  if (!data || typeof data !== "object") return;
  const { state } = ctx;
  const tid = String(data.trial_id ?? "");
  if (type === "status") {
    if (state.job && typeof data.status === "string") {
      state.job.status = data.status;
      if (data.error) state.job.error = data.error;
      renderHead(ctx);
      renderProgress(ctx);
    }
    if (typeof data.status === "string") logEvent(ctx, `job ${data.status}${data.error ? `: ${data.error}` : ""}`);
    refreshJobSoon(ctx);
    if (isTerminal(data.status)) refreshOutputsSoon(ctx, 200);
  } else if (type === "epoch") {
    const t = trialState(ctx, tid);
    const metric = metricName(state.result, state.job);
    const value = (data.metrics || {})[metric];
    t.epochs = Math.max(t.epochs || 0, isNum(data.epoch) ? data.epoch : 0);
    if (isNum(value)) {
      t.last = value;
      if (isBetter(value, t.best, resolveMode(state.result, state.job))) t.best = value;
    }
    state.trials.set(tid, t);
    renderProgress(ctx);
    logEvent(ctx, `trial ${tid} epoch ${data.epoch ?? "?"}${isNum(value) ? `: ${pretty(metric)} ${fmtNum(value)}` : ""}`);
    refreshJobSoon(ctx, 2000);
    refreshOutputsSoon(ctx, 5000);
  } else if (type === "trial_started") {
    const t = trialState(ctx, tid);
    Object.assign(t, { branch: data.branch, is_control: Boolean(data.is_control), config: data.config });
    if (!t.status || t.status === "pending") t.status = "running";
    state.trials.set(tid, t);
    logEvent(ctx, `trial ${tid} started (${data.branch ?? "?"}${data.is_control ? ", control" : ""})`);
    renderProgress(ctx);
    refreshJobSoon(ctx);
  } else if (type === "trial_finished") {
    const t = trialState(ctx, tid);
    t.status = typeof data.status === "string" ? data.status : "succeeded";
    state.trials.set(tid, t);
    logEvent(ctx, `trial ${tid} ${t.status}${data.error ? `: ${data.error}` : ""}`);
    renderProgress(ctx);
    refreshJobSoon(ctx);
    refreshOutputsSoon(ctx);
  } else if (type === "job_finished") {
    logEvent(ctx, "job finished: final results received");
    refreshJobSoon(ctx, 200);
    refreshOutputsSoon(ctx, 200);
  } else if (type === "job_failed") {
    logEvent(ctx, `job failed${data.error ? `: ${data.error}` : ""}`);
    refreshJobSoon(ctx, 200);
  }
}

async function stream(ctx) {
  setLive(ctx, "connecting to live updates…");
  const response = await request(`${ctx.base}/events`, { signal: ctx.v.controller.signal, accept: "text/event-stream" });
  await readEvents(response, {
    onOpen: () => setLive(ctx, "live"),
    onEvent: (type, data) => handleEvent(ctx, type, data),
    stopped: () => ctx.v.stopped,
  });
}

async function poll(ctx) {
  const { v } = ctx;
  if (v.stopped) return;
  try {
    const before = progressKey(ctx.state.job);
    const job = await loadJob(ctx);
    if (!job) return;
    const now = progressKey(job);
    if (now !== before) await loadResults(ctx);
    if (isTerminal(job.status)) {
      setLive(ctx, "");
      await loadOutputs(ctx);
      return;
    }
    if (now !== before) loadPlots(ctx);
  } catch (err) {
    if (isAbort(err) || v.stopped || err.status === 401) return;
    setLive(ctx, `polling (last attempt failed: ${err.message})`);
  }
  later(v, POLL_MS, () => poll(ctx));
}

/** Follow a job that is not finished: the event stream, then polling every few seconds if it ends early. */
export async function follow(ctx) {
  const { v } = ctx;
  try {
    await stream(ctx);
    if (v.stopped) return;
    // The stream ends when the job finishes: take the final state.
    const job = await loadJob(ctx);
    if (job && isTerminal(job.status)) {
      setLive(ctx, "");
      await loadOutputs(ctx);
      return;
    }
    setLive(ctx, "live stream ended; polling every 3 s");
  } catch (err) {
    if (isAbort(err) || v.stopped || err.status === 401) return;
    setLive(ctx, "live stream unavailable; polling every 3 s");
  }
  later(v, POLL_MS, () => poll(ctx));
}
