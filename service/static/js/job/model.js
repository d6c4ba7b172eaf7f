// The job page's reading of the API payloads (JobRead, JobResult): pure functions, no DOM, no fetch.
// A fact the payload carries (the mode, a branch's gain) is shown as sent; only a result without it is filled in.

import { fmtValue, isNum } from "../format.js";

/** The accuracy columns of the results table. */
export const SHOWN_METRICS = new Set(["balanced_accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"]);
/** Config keys that name or number a trial rather than configure it (matched on the last path segment). */
const IGNORED_CONFIG_KEYS = new Set(["loss", "branch", "branch_index", "is_control", "sample_index", "trial_id", "config_id"]);
/** Config values that are the default and say nothing in the table. */
const DEFAULT_CONFIG_VALUES = new Map([
  ["branch.reweighting", "none"],
  ["reweighting", "none"],
]);

/** The search metric: the result's, else the job's progress. */
export function metricName(result, job) {
  return (result && result.metric) || (job && job.progress && job.progress.metric) || "";
}

/**
 * "max" or "min": the result's mode, else the job's resolved mode (JobRead.progress.mode), else the spec's
 * `tune.mode`; "max" where none says.
 */
export function resolveMode(result, job) {
  const progress = job && job.progress;
  const tune = job && job.spec && job.spec.tune;
  for (const mode of [result && result.mode, progress && progress.mode, tune && tune.mode]) {
    if (mode === "min" || mode === "max") return mode;
  }
  return "max";
}

/** Whether `a` is better than `b` in `mode` (any number beats a missing one). */
export function isBetter(a, b, mode) {
  if (!isNum(a)) return false;
  if (!isNum(b)) return true;
  return mode === "min" ? a < b : a > b;
}

/** The gain of `value` over the control's, signed so that positive is better in `mode`; null without both. */
export function fallbackGain(value, controlValue, mode) {
  if (!isNum(value) || !isNum(controlValue)) return null;
  return mode === "min" ? controlValue - value : value - controlValue;
}

/** Flatten a config for display: {"loss": {"gamma": 2}} -> [["loss.gamma", 2]]; flat keys stay as they are. */
export function flatConfig(config, prefix = "", out = []) {
  if (!config || typeof config !== "object") return out;
  for (const [key, value] of Object.entries(config)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value)) flatConfig(value, name, out);
    else out.push([name, value]);
  }
  return out;
}

/** "control (ce)": the control trial's branch is "control" (or the loss name). */
export function controlLabel(trial) {
  const loss = trial && trial.config && typeof trial.config.loss === "string" ? trial.config.loss : null;
  const name = trial && trial.branch && trial.branch !== "control" ? trial.branch : loss || "ce";
  return `control (${name})`;
}

/** A progress key of a JobRead: it changes when the status or any progress figure does. */
export function progressKey(job) {
  return job ? JSON.stringify({ status: job.status, progress: job.progress || {} }) : "";
}

/** The trials table's rows from a result: [trial_id, {branch, is_control, status, epochs, last, best}]. */
export function trialRows(result) {
  const rows = [];
  for (const t of (result && result.trials) || []) {
    if (!t || !t.trial_id) continue;
    const history = Array.isArray(t.history) ? t.history : [];
    const last = history.length ? history[history.length - 1][result.metric] : null;
    rows.push([
      String(t.trial_id),
      {
        branch: t.branch,
        is_control: Boolean(t.is_control),
        status: t.status,
        epochs: history.length,
        last: isNum(last) ? last : null,
        best: t.best && isNum(t.best.value) ? t.best.value : null,
      },
    ]);
  }
  return rows;
}

function ciExcludesZero(ci) {
  return Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1]) && (ci[0] > 0 || ci[1] < 0);
}

/** The branches as the result sends them (gains computed by the service), the control's own row left out. */
function serverBranchRows(result, byId, controlValue) {
  return result.branches
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
}

/**
 * Fallback for a result without `branches` (an older service's partial result): the best trial of each branch
 * so far, its gain over the control's best value signed by the job's mode.
 */
function trialBranchRows(trials, result, controlValue, mode) {
  const best = new Map();
  for (const t of trials) {
    if (!t || t.is_control || t.trial_id === result.control_trial_id || !t.best || !isNum(t.best.value)) continue;
    const key = `${t.branch_index ?? ""}:${t.branch}`;
    if (!best.has(key) || isBetter(t.best.value, best.get(key).best.value, mode)) best.set(key, t);
  }
  return Array.from(best.values())
    .sort((a, b) => (a.branch_index ?? 0) - (b.branch_index ?? 0))
    .map((t) => ({
      branch: t.branch,
      trialId: t.trial_id,
      metrics: t.best.metrics || {},
      value: t.best.value,
      controlValue,
      gain: fallbackGain(t.best.value, controlValue, mode),
      config: t.config,
    }));
}

/**
 * The control's figures over its seeds ({seeds, metrics, value}), as the service sends them (`control_summary`).
 * Fallback for a result stored by an older driver, without it: the mean over the control trials, computed here.
 */
function controlFigures(trials, control, summary) {
  if (summary && summary.best_metrics && isNum(summary.n_seeds)) {
    return {
      seeds: summary.n_seeds || null,
      metrics: summary.best_metrics,
      value: isNum(summary.test_mean) ? summary.test_mean : control.best.value,
    };
  }
  const seeds = trials.filter((t) => t && t.is_control && t.best && t.best.metrics && isNum(t.best.value));
  const metrics = { ...(control.best.metrics || {}) };
  if (seeds.length > 1) {
    for (const key of SHOWN_METRICS) {
      const values = seeds.map((t) => t.best.metrics[key]);
      if (values.every(isNum)) metrics[key] = values.reduce((a, b) => a + b, 0) / values.length;
    }
  }
  return { seeds: seeds.length || null, metrics, value: control.best.value };
}

/** The control's row, then its post-hoc variant ("CE + post-hoc LA") when the result has one. */
function controlRows(trials, control, result, controlValue) {
  const rows = [
    {
      branch: controlLabel(control),
      trialId: control.trial_id,
      ...controlFigures(trials, control, result.control_summary),
      controlValue: null,
      gain: null,
      config: control.config,
      isControl: true,
    },
  ];
  const ph = result.control_posthoc;
  if (ph && isNum(ph.test_mean)) {
    // "CE + post-hoc LA": the control's logits adjusted by -tau log(prior), tau chosen on validation.
    rows.push({
      branch: `CE + post-hoc LA (tau ${ph.tau})`,
      trialId: null, // the control's own trial: not marked best a second time
      seeds: isNum(ph.n_seeds) ? ph.n_seeds : null,
      metrics: ph.metrics || {},
      value: ph.test_mean,
      controlValue,
      gain: isNum(ph.gain) ? ph.gain : null,
      gainStd: isNum(ph.gain_std) ? ph.gain_std : null,
      ci: Array.isArray(ph.gain_ci95) ? ph.gain_ci95 : null,
      // The service's `significant`; a result stored by an older driver lacks it: the branches' rule, applied here.
      significant: typeof ph.significant === "boolean" ? ph.significant : ciExcludesZero(ph.gain_ci95),
      config: control.config,
    });
  }
  return rows;
}

/** Rows of the results table: one per loss branch, then the control (and its post-hoc variant). */
export function branchRows(result, mode) {
  const trials = Array.isArray(result.trials) ? result.trials : [];
  const byId = new Map(trials.map((t) => [t.trial_id, t]));
  const control = byId.get(result.control_trial_id) || trials.find((t) => t && t.is_control) || null;
  const controlBest = control && control.best ? control.best : null;
  const controlValue = controlBest && isNum(controlBest.value) ? controlBest.value : null;
  const rows =
    Array.isArray(result.branches) && result.branches.length
      ? serverBranchRows(result, byId, controlValue)
      : trialBranchRows(trials, result, controlValue, mode);
  if (controlBest) rows.push(...controlRows(trials, control, result, controlValue));
  return rows;
}

/**
 * The config keys worth a column of text: the loss parameters and whatever differs between trials (a key
 * missing from some trials counts as differing); seeds, identity keys and keys equal in every trial are left out.
 * Keys are parameter paths as the trials carry them ("loss.gamma", "branch.start_epoch"); nested configs are
 * flattened to the same dotted form.
 */
export function configKeysToShow(result) {
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

/** "loss.gamma=2, branch.reweighting=effective_number-drw": the shown keys as-is, default values left out. */
export function configText(config, shown) {
  return flatConfig(config || {})
    .filter(([k, val]) => shown.has(k) && DEFAULT_CONFIG_VALUES.get(k) !== val)
    .map(([k, val]) => `${k}=${fmtValue(val)}`)
    .join(", ");
}
