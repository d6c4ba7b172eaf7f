// Numbers, times and names as the page shows them. Pure functions: no DOM, no fetch.

export function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}

export function fmtNum(v, digits = 4) {
  return isNum(v) ? v.toFixed(digits) : "–";
}

export function fmtPct(v) {
  return isNum(v) ? `${(v * 100).toFixed(1)}%` : "–";
}

/** A gain in accuracy (a fraction) as percentage points: 0.0705 -> "+7.05 pp". */
export function fmtPoints(v) {
  if (!isNum(v)) return "–";
  const s = (v * 100).toFixed(2);
  return `${v > 0 ? "+" : ""}${s} pp`;
}

/** "+5.2 ± 2.3 pp" (points) or "+0.0123 ± 0.0040": a gain and its standard deviation over seeds. */
export function fmtGain(v, std, asPoints) {
  if (!isNum(v)) return "–";
  const scale = asPoints ? 100 : 1;
  const digits = asPoints ? 1 : 4;
  const sign = v > 0 ? "+" : "";
  const spread = isNum(std) ? ` ± ${(std * scale).toFixed(digits)}` : "";
  return `${sign}${(v * scale).toFixed(digits)}${spread}${asPoints ? " pp" : ""}`;
}

/** "95% CI [+1.1, +9.3]" or "" without an interval (a single seed). */
export function fmtCi(ci, asPoints) {
  if (!Array.isArray(ci) || ci.length !== 2 || !isNum(ci[0]) || !isNum(ci[1])) return "";
  const scale = asPoints ? 100 : 1;
  const digits = asPoints ? 1 : 4;
  const one = (x) => `${x > 0 ? "+" : ""}${(x * scale).toFixed(digits)}`;
  return `95% CI [${one(ci[0])}, ${one(ci[1])}]`;
}

export function fmtSigned(v, digits = 4) {
  if (!isNum(v)) return "–";
  const s = v.toFixed(digits);
  return v > 0 ? `+${s}` : s;
}

/** API time -> Date: the API sends unix seconds (float); an ISO 8601 string (UTC if no offset) works too. */
export function parseTime(t) {
  if (isNum(t)) return new Date(t * 1000);
  if (!t || typeof t !== "string") return null;
  const hasZone = /([zZ]|[+-]\d\d:?\d\d)$/.test(t);
  const d = new Date(hasZone ? t : `${t}Z`);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtAge(t) {
  const d = parseTime(t);
  if (!d) return "–";
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtDate(t) {
  const d = parseTime(t);
  return d ? d.toLocaleString() : "–";
}

export function fmtDuration(from, to) {
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

/** "balanced_accuracy" -> "balanced accuracy". */
export function pretty(metric) {
  return String(metric || "").replace(/_/g, " ");
}

/** "0.8528 balanced accuracy (ldam)" from a progress object's `best` ({trial_id, branch, epoch, value}). */
export function fmtBest(progress, withMetric = true) {
  const best = progress && progress.best;
  if (!best || !isNum(best.value)) return null;
  const metric = withMetric && progress.metric ? ` ${pretty(progress.metric)}` : "";
  return `${fmtNum(best.value)}${metric}${best.branch ? ` (${best.branch})` : ""}`;
}

/** A config value: integers as they are, other numbers to 4 significant digits, strings bare, the rest as JSON. */
export function fmtValue(v) {
  if (isNum(v)) return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
  return typeof v === "string" ? v : JSON.stringify(v);
}
