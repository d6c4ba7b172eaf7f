// The job page's progress section: the bar, the trials table and the recent events.

import { badge, el, headRow } from "../dom.js";
import { fmtBest, fmtNum, isNum, pretty } from "../format.js";
import { controlLabel, metricName } from "./model.js";

export function renderProgress(ctx) {
  const { job, trials } = ctx.state;
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
    el("div", { class: "progress-line" }, bar, el("span", {}, facts.join(" · ")), ctx.liveState),
  ];
  if (trials.size) {
    const metric = pretty(metricName(ctx.state.result, job));
    children.push(
      el(
        "table",
        { id: "trials-table" },
        headRow([
          "Trial",
          "Branch",
          "Status",
          ["Epochs", { class: "num" }],
          [`Last ${metric}`, { class: "num" }],
          [`Best ${metric}`, { class: "num" }],
        ]),
        ctx.trialsBody,
      ),
    );
    renderTrials(ctx);
  }
  if (ctx.log.childElementCount) children.push(el("h2", {}, "Recent events"), ctx.log);
  ctx.sections.progress.replaceChildren(...children);
}

function renderTrials(ctx) {
  const rows = Array.from(ctx.state.trials.entries()).map(([tid, t]) =>
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
  ctx.trialsBody.replaceChildren(...rows);
}

/** Add a line to the recent events (the newest first, at most 50). */
export function logEvent(ctx, text) {
  const time = new Date().toLocaleTimeString();
  ctx.log.prepend(el("li", {}, `${time}  ${text}`));
  while (ctx.log.childElementCount > 50) ctx.log.lastElementChild.remove();
  if (!ctx.log.isConnected) renderProgress(ctx);
}
