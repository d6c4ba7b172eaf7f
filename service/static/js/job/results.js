// The job page's results section: one row per loss branch and the control, with the gain over the control.

import { el, headRow } from "../dom.js";
import { fmtCi, fmtGain, fmtNum, fmtPct, fmtPoints, fmtSigned, isNum, pretty } from "../format.js";
import { branchRows, configKeysToShow, configText, isBetter, metricName, resolveMode, SHOWN_METRICS } from "./model.js";

export function renderResults(ctx, result, note) {
  const section = ctx.sections.results;
  const children = [el("h2", { id: "results-title" }, "Results per loss branch")];
  if (!result) {
    children.push(el("p", { class: "muted", id: "results-empty" }, note || "No results yet."));
    section.replaceChildren(...children);
    return;
  }
  const mode = resolveMode(result, ctx.state.job);
  const rows = branchRows(result, mode);
  if (!rows.length) {
    children.push(el("p", { class: "muted", id: "results-empty" }, "No trial has reported a best epoch yet."));
    section.replaceChildren(...children);
    return;
  }
  const metric = result.metric || metricName(result, ctx.state.job);
  // The search metric gets its own column unless it is one of the four accuracy columns already there.
  const extraMetric = !SHOWN_METRICS.has(metric);
  const asPoints = /accuracy$/.test(metric) && mode === "max";
  const bestId = result.best_trial && result.best_trial.trial_id;
  const onTest = result.selected_on !== "val";
  // Figures chosen on the split they report are labelled as such in every column that shows one.
  const onTestLabel = () => (onTest ? el("div", { class: "ci" }, "selected on test") : null);
  const shown = configKeysToShow(result);
  const body = rows.map((r) => {
    const m = r.metrics || {};
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
      gainCell(r, metric, mode, asPoints),
      el("td", { class: "num seeds" }, isNum(r.seeds) ? String(r.seeds) : "–"),
      el("td", { class: "config" }, text ? el("code", { title: JSON.stringify(r.config) }, text) : "–"),
    );
  });
  const gainTitle = `Gain in ${pretty(metric)} over the control: mean ± std of the paired differences by seed`;
  children.push(
    el(
      "table",
      { id: "results-table" },
      headRow([
        "Branch",
        ["Balanced acc.", { class: "num" }, onTestLabel()],
        ["Many-shot", { class: "num" }, onTestLabel()],
        ["Medium-shot", { class: "num" }, onTestLabel()],
        ["Few-shot", { class: "num" }, onTestLabel()],
        extraMetric ? [pretty(metric) || "metric", { class: "num" }] : null,
        ["Gain vs control", { class: "num", title: gainTitle }, onTestLabel()],
        ["Seeds", { class: "num", title: "Seeds (repeats) behind the row" }],
        "Best config",
      ]),
      el("tbody", {}, body),
    ),
  );
  children.push(el("p", { class: "muted", id: "results-selection" }, selectionText(result)));
  if (rows.some((r) => r.significant)) {
    children.push(el("p", { class: "muted" }, "✓ the 95% confidence interval of the gain excludes 0."));
  }
  if (note) children.push(el("p", { class: "muted" }, note));
  section.replaceChildren(...children);
}

/** The gain cell: "reference" for the control; else the gain, signed so that positive is better in `mode`. */
function gainCell(r, metric, mode, asPoints) {
  if (r.isControl) return el("td", { class: "num gain-zero" }, "reference");
  const improved = isNum(r.gain) ? r.gain > 0 : isBetter(r.value, r.controlValue, mode);
  const worse = isNum(r.gain) ? r.gain < 0 : isNum(r.value) && isBetter(r.controlValue, r.value, mode);
  const cls = improved ? "gain-pos" : worse ? "gain-neg" : "gain-zero";
  const label = improved ? "better than control" : worse ? "worse than control" : "same as control";
  let gain = asPoints ? fmtPoints(r.gain) : fmtSigned(r.gain);
  if (isNum(r.gainStd) || r.ci) gain = fmtGain(r.gain, r.gainStd, asPoints);
  const ci = fmtCi(r.ci, asPoints);
  const sig = r.significant ? " · significant: the 95% CI excludes 0" : "";
  return el(
    "td",
    { class: `num ${cls}${r.significant ? " significant" : ""}`, title: `${label} (${pretty(metric)})${sig}` },
    gain,
    r.significant ? el("span", { class: "sig-mark", title: "the 95% CI excludes 0" }, " ✓") : null,
    ci ? el("div", { class: "ci" }, ci) : null,
  );
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
