"""Figures of a JobResult (docs/ARCHITECTURE.md), rendered from the stored JSON alone.

Matplotlib is used through ``matplotlib.figure.Figure`` and the Agg canvas only, never ``pyplot``: no global
figure state is touched, so renders can run concurrently in server threads.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Literal, TypedDict

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, PercentFormatter

PLOT_KINDS = ("per-class", "curves", "shots", "calibration")
FORMATS = ("png", "svg")

FIGSIZE = (9.0, 5.5)  # inches; at DPI this is 900 x 550 px
DPI = 100
CONTROL_COLOR = "black"
# tab10 without its grey (kept distinct from the black control).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
GROUPS = (("many", "Many-shot"), ("medium", "Medium-shot"), ("few", "Few-shot"))
GROUP_SHADES = {"many": "#4c72b0", "medium": "#dd8452", "few": "#c44e52"}
MANY_THRESHOLD, FEW_THRESHOLD = 100, 20  # fallback when the result has no shot_groups


# A JobResult, or a part of one (a trial, an epoch's metrics), as JSON data: the stored result or a running job's
# partial one, read defensively (a partial result lacks sections, an older one has fewer keys).
_Json = dict[str, Any]


class NoFinishedTrials(Exception):
    """The result has no trial with at least one epoch of metrics: there is nothing to draw yet."""


# --------------------------------------------------------------------------------------------------------------
# Reading the result
# --------------------------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float, or None (for None, NaN, inf and anything not numeric)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _trials(result: _Json) -> list[_Json]:
    return [t for t in result.get("trials") or [] if isinstance(t, dict)]


def _has_metrics(trial: _Json) -> bool:
    return any(isinstance(h, dict) for h in trial.get("history") or [])


def _is_control(trial: _Json, result: _Json) -> bool:
    control_id = result.get("control_trial_id")
    return bool(trial.get("is_control")) or (control_id is not None and trial.get("trial_id") == control_id)


def _metric(result: _Json) -> tuple[str, Literal["max", "min"]]:
    """The result's metric (``balanced_accuracy`` when missing) and its mode (``max`` unless ``min``)."""
    metric = result.get("metric")
    return (metric if isinstance(metric, str) and metric else "balanced_accuracy"), (
        "min" if result.get("mode") == "min" else "max"
    )


def _best_metrics(trial: _Json, result: _Json) -> _Json | None:
    """The full metrics dict of a trial's best epoch (falling back to the last epoch, then to its history)."""
    best = trial.get("best")
    if isinstance(best, dict) and isinstance(best.get("metrics"), dict):
        return best["metrics"]
    if isinstance(trial.get("final"), dict):
        return trial["final"]
    metric, mode = _metric(result)
    rows = [h for h in trial.get("history") or [] if isinstance(h, dict) and _num(h.get(metric)) is not None]
    if not rows:
        return None
    return (max if mode == "max" else min)(rows, key=lambda h: h[metric])


def _best_value(trial: _Json, result: _Json) -> float | None:
    best = trial.get("best")
    if isinstance(best, dict) and _num(best.get("value")) is not None:
        return _num(best["value"])
    metrics = _best_metrics(trial, result)
    return _num(metrics.get(_metric(result)[0])) if metrics else None


class _LineStyle(TypedDict):
    """The keyword arguments of ``Axes.plot`` that draw a series."""

    color: str
    linestyle: str
    linewidth: float


class _Series:
    """One line in a figure: a loss branch (through its best trial) or the control."""

    def __init__(self, label: str, color: str, trial: _Json, metrics: _Json, is_control: bool) -> None:
        self.label, self.color, self.trial, self.metrics, self.is_control = label, color, trial, metrics, is_control

    @property
    def style(self) -> _LineStyle:
        if self.is_control:
            return {"color": self.color, "linestyle": "--", "linewidth": 1.8}
        return {"color": self.color, "linestyle": "-", "linewidth": 1.8}


def _branch_keys(result: _Json) -> list[tuple[int | None, str]]:
    """The loss branches (branch_index, branch name) of the result, control excluded, in branch order."""
    keys: dict[tuple[int | None, str], None] = {}
    for b in result.get("branches") or []:
        if isinstance(b, dict) and b.get("branch") is not None:
            keys.setdefault((b.get("branch_index"), str(b["branch"])), None)
    for t in _trials(result):
        if not _is_control(t, result) and t.get("branch") is not None:
            keys.setdefault((t.get("branch_index"), str(t["branch"])), None)
    return sorted(keys, key=lambda k: (k[0] is None, k[0] if k[0] is not None else 0, k[1]))


def _labels(result: _Json) -> dict[tuple[int | None, str], str]:
    keys = _branch_keys(result)
    names = [name for _, name in keys]
    return {(idx, name): (name if names.count(name) == 1 else f"{name} #{idx}") for idx, name in keys}


def _colors(result: _Json) -> dict[tuple[int | None, str], str]:
    """One colour per loss branch, the same in every figure of a result (assigned in branch order)."""
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(_branch_keys(result))}


def _trial_key(trial: _Json) -> tuple[int | None, str]:
    return (trial.get("branch_index"), str(trial.get("branch")))


def _series(result: _Json) -> list[_Series]:
    """The best trial of each loss branch that has metrics, plus the control (last), as figure series."""
    trials = _trials(result)
    by_id = {t.get("trial_id"): t for t in trials}
    metric, mode = _metric(result)
    colors, labels = _colors(result), _labels(result)
    declared = {}
    for b in result.get("branches") or []:
        if isinstance(b, dict) and b.get("branch") is not None:
            declared[(b.get("branch_index"), str(b["branch"]))] = b.get("best_trial_id")
    out: list[_Series] = []
    for key in _branch_keys(result):
        best = by_id.get(declared.get(key))
        if best is None or _is_control(best, result) or not _has_metrics(best):
            # Partial result (or no branches summary yet): pick the branch's best trial from the trials.
            members = [t for t in trials if _trial_key(t) == key and not _is_control(t, result) and _has_metrics(t)]
            scored = [(v, t) for t in members if (v := _best_value(t, result)) is not None]
            if scored:
                best = (max if mode == "max" else min)(scored, key=lambda vt: vt[0])[1]
            else:
                best = members[0] if members else None
        if best is None:
            continue
        metrics = _best_metrics(best, result)
        if metrics is not None:
            out.append(_Series(labels[key], colors[key], best, metrics, is_control=False))
    controls = [t for t in trials if _is_control(t, result) and _has_metrics(t)]
    control = next((t for t in controls if t.get("trial_id") == result.get("control_trial_id")), None)
    control = control or (controls[0] if controls else None)
    if control is not None and (metrics := _best_metrics(control, result)) is not None:
        out.append(_Series(_control_label(control), CONTROL_COLOR, control, metrics, is_control=True))
    return out


def _control_label(trial: _Json) -> str:
    """``control (ce)``: the control trial's branch is ``control`` (jobs.tune) or the loss name."""
    config = trial.get("config")
    loss = config.get("loss") if isinstance(config, dict) else None
    branch = trial.get("branch")
    name = branch if branch and branch != "control" else loss if isinstance(loss, str) else "ce"
    return f"control ({name})"


def _check_finished(result: _Json) -> None:
    if not isinstance(result, dict) or not any(_has_metrics(t) for t in _trials(result)):
        raise NoFinishedTrials("no trial has reported an epoch of metrics yet")


def _pretty(metric: str) -> str:
    return metric.replace("_", " ")


def _title(result: _Json, what: str) -> str:
    name = result.get("job_name")
    dataset = (result.get("dataset") or {}).get("name")
    parts = [str(p) for p in (name, dataset) if p]
    return f"{what}\n{' · '.join(parts)}" if parts else what


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def _new_figure(nrows: int = 1, height_ratios: list[float] | None = None) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    kw = {"height_ratios": height_ratios} if height_ratios else {}
    axes = fig.subplots(nrows, 1, squeeze=False, sharex=nrows > 1, gridspec_kw=kw)[:, 0]
    return fig, list(axes)


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def _shot_groups(result: _Json, counts: list[float]) -> dict[str, list[int]]:
    groups = (result.get("dataset") or {}).get("shot_groups")
    if isinstance(groups, dict) and any(groups.get(g) for g, _ in GROUPS):
        return {g: [int(k) for k in groups.get(g) or [] if 0 <= int(k) < len(counts)] for g, _ in GROUPS}
    return {
        "many": [k for k, c in enumerate(counts) if c > MANY_THRESHOLD],
        "medium": [k for k, c in enumerate(counts) if FEW_THRESHOLD <= c <= MANY_THRESHOLD],
        "few": [k for k, c in enumerate(counts) if c < FEW_THRESHOLD],
    }


def _plot_per_class(fig: Figure, ax: Axes, result: _Json) -> None:
    dataset = result.get("dataset") or {}
    raw_counts = [_num(c) for c in dataset.get("class_counts") or []]
    counts = [c for c in raw_counts if c is not None]
    series = [s for s in _series(result) if isinstance(s.metrics.get("per_class_accuracy"), list)]
    ax.set_title(_title(result, "Per-class test accuracy vs training count"), fontsize=11, pad=16)
    if not series:
        _empty(ax, "No per-class accuracies yet")
        return
    if not counts or len(counts) != len(raw_counts):  # none known, or one not a number
        _per_class_by_index(ax, series)
        return
    k = len(counts)
    order = sorted(range(k), key=lambda i: (-counts[i], i))  # head to tail
    xs = {i: max(counts[i], 0.5) for i in range(k)}  # log axis: a class with no sample sits at 0.5
    names = dataset.get("class_names") or []

    # Shot-group bands, split at the geometric midpoint between neighbouring groups.
    groups = _shot_groups(result, counts)
    spans: list[tuple[str, str, float, float]] = []  # (group, label, lowest x, highest x)
    for g, label in GROUPS:
        members = [xs[i] for i in groups[g]]
        if members:
            spans.append((g, label, min(members), max(members)))
    spans.sort(key=lambda s: -s[3])
    lo_all, hi_all = min(xs.values()), max(xs.values())
    pad = 1.25
    for j, span in enumerate(spans):
        hi = hi_all * pad if j == 0 else math.sqrt(spans[j - 1][2] * span[3])
        lo = lo_all / pad if j == len(spans) - 1 else math.sqrt(span[2] * spans[j + 1][3])
        ax.axvspan(lo, hi, color=GROUP_SHADES[span[0]], alpha=0.12, linewidth=0, zorder=0)
        ax.text(
            math.sqrt(lo * hi),
            1.01,
            span[1],
            ha="center",
            va="bottom",
            fontsize=9,
            color="0.3",
            transform=ax.get_xaxis_transform(),
        )

    for s in series:
        pca = s.metrics["per_class_accuracy"]
        pts = [(xs[i], v) for i in order if i < len(pca) and (v := _num(pca[i])) is not None]
        if not pts:
            continue
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            markersize=4,
            label=s.label,
            zorder=3 if s.is_control else 2,
            **s.style,
        )

    ax.set_xscale("log")
    ax.set_xlim(hi_all * pad, lo_all / pad)  # inverted: head on the left, tail on the right
    ticks = sorted({xs[i] for i in range(k)}, reverse=True)
    if len(ticks) <= 25:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        tick_labels = [f"{t:g}" for t in ticks]
        if len(names) == k and len(ticks) == k and k <= 12:  # one class per tick: name it too
            by_x = {xs[i]: names[i] for i in range(k)}
            tick_labels = [f"{t:g}\n{by_x[t]}" for t in ticks]
        ax.set_xticklabels(tick_labels, fontsize=8)
    ax.set_xlabel("training samples per class (log scale, head → tail)")
    ax.set_ylabel("test accuracy (best epoch)")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)


def _integer_ticks(ax: Axes) -> None:
    """Whole numbers only on the x axis (epochs, class indices), keeping matplotlib's default tick placement."""
    locator = ax.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # the default AutoLocator is one; the base Locator takes no parameters
        locator.set_params(integer=True)


def _per_class_by_index(ax: Axes, series: list[_Series]) -> None:
    """A partial result has no dataset section yet (no training counts): plot against the class index."""
    for s in series:
        pts = [(i, v) for i, a in enumerate(s.metrics["per_class_accuracy"]) if (v := _num(a)) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=s.label, **s.style)
    ax.set_xlabel("class index (training counts are known once the job has finished)")
    ax.set_ylabel("test accuracy (best epoch)")
    ax.set_ylim(-0.02, 1.02)
    _integer_ticks(ax)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)


def _plot_curves(fig: Figure, ax: Axes, result: _Json) -> None:
    metric, mode = _metric(result)
    colors, labels = _colors(result), _labels(result)
    best_id = (result.get("best_trial") or {}).get("trial_id")
    trials = _trials(result)
    if best_id is None:
        scored = [(v, t) for t in trials if (v := _best_value(t, result)) is not None]
        if scored:
            best_id = (max if mode == "max" else min)(scored, key=lambda vt: vt[0])[1].get("trial_id")
    val_key = f"val_{metric}"
    has_val = any(
        isinstance(h, dict) and _num(h.get(val_key)) is not None for t in trials for h in t.get("history") or []
    )
    what = f"{_pretty(metric)} per epoch, all trials" + (": test (solid) and validation (dotted)" if has_val else "")
    ax.set_title(_title(result, what), fontsize=11)
    drew_any = stopped_any = selected_any = False
    seen: dict[str, Line2D] = {}
    for t in sorted(trials, key=lambda t: t.get("trial_id") == best_id):  # the best trial drawn last, on top
        rows = [h for h in t.get("history") or [] if isinstance(h, dict)]
        epochs = [e if (e := _num(h.get("epoch"))) is not None else j + 1 for j, h in enumerate(rows)]
        pts = [(x, y) for x, h in zip(epochs, rows, strict=True) if (y := _num(h.get(metric))) is not None]
        if not pts:
            continue
        drew_any = True
        control = _is_control(t, result)
        color = CONTROL_COLOR if control else colors.get(_trial_key(t), PALETTE[0])
        is_best = t.get("trial_id") == best_id
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(
            xs,
            ys,
            color=color,
            linestyle="--" if control else "-",
            linewidth=3.0 if is_best else 1.3,
            alpha=1.0 if is_best else 0.75,
            marker="o" if is_best else None,
            markersize=5,
            zorder=4 if is_best else 2,
        )
        # each validation point at its own row's epoch (a row without the test metric has no point in ``xs``)
        val_pts = [(x, y) for x, h in zip(epochs, rows, strict=True) if (y := _num(h.get(val_key))) is not None]
        if val_pts:  # the split every choice is made on, beside the one reported
            ax.plot(
                [p[0] for p in val_pts],
                [p[1] for p in val_pts],
                color=color,
                linestyle=":",
                linewidth=2.0 if is_best else 1.0,
                alpha=0.9 if is_best else 0.6,
                zorder=3 if is_best else 1,
            )
        selected = t.get("selected")
        epoch = _num(selected.get("epoch")) if isinstance(selected, dict) else None
        if is_best and epoch is not None:
            at = [y for x, y in pts if x == epoch]
            if at:
                selected_any = True
                ax.plot(epoch, at[0], marker="*", markersize=15, color=color, markeredgecolor="black", zorder=6)
        if t.get("status") in ("stopped", "failed", "error", "terminated"):
            stopped_any = True
            ax.plot(xs[-1], ys[-1], marker="x", markersize=9, markeredgewidth=2.2, color=color, zorder=5)
        label = _control_label(t) if control else labels.get(_trial_key(t), str(t.get("branch")))
        seen.setdefault(label, Line2D([], [], color=color, linestyle="--" if control else "-", linewidth=1.8))
    if not drew_any:
        _empty(ax, f"No '{_pretty(metric)}' values in the history")
        return
    # Legend in branch order, the control last.
    order = [labels[k] for k in _branch_keys(result) if labels[k] in seen]
    order += [n for n in seen if n.startswith("control (")]
    names = order + [n for n in seen if n not in order]
    handles = [seen[n] for n in names]
    handles.append(Line2D([], [], color="0.3", linewidth=3.0, marker="o"))
    names.append("best trial")
    if has_val:
        handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=2.0))
        names.append("validation")
    if selected_any:
        on = "test" if result.get("selected_on") == "test" else "validation"
        handles.append(Line2D([], [], color="0.3", linestyle="none", marker="*", markersize=12, markeredgecolor="k"))
        names.append(f"selected epoch (on {on})")
    if stopped_any:
        handles.append(Line2D([], [], color="0.3", linestyle="none", marker="x", markersize=8, markeredgewidth=2))
        names.append("stopped early")
    ax.legend(handles, names, loc="lower right" if mode == "max" else "upper right", fontsize=9, framealpha=0.9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{_pretty(metric)} ({'higher' if mode == 'max' else 'lower'} is better)")
    _integer_ticks(ax)
    ax.grid(True, alpha=0.3)


def _plot_shots(fig: Figure, ax: Axes, result: _Json) -> None:
    series = _series(result)
    ax.set_title(_title(result, "Shot-group test accuracy, best trial of each branch vs control"), fontsize=11)
    keys = [(g, f"{g}_shot_accuracy", label) for g, label in GROUPS]
    present = [(g, key, label) for g, key, label in keys if any(_num(s.metrics.get(key)) is not None for s in series)]
    if not series or not present:
        _empty(ax, "No shot-group accuracies yet")
        return
    n = len(series)
    width = 0.8 / n
    for j, s in enumerate(series):
        xs, ys = [], []
        for gi, (_, key, _) in enumerate(present):
            v = _num(s.metrics.get(key))
            if v is not None:  # an empty group is skipped, not drawn as 0
                xs.append(gi - 0.4 + width * (j + 0.5))
                ys.append(v)
        if not xs:
            continue
        # The control hatched white on black, a branch filled with its colour (matplotlib's default edge, no hatch).
        color, edgecolor, hatch = ("white", "black", "//") if s.is_control else (s.color, None, None)
        bars = ax.bar(
            xs, ys, width * 0.92, label=s.label, linewidth=1.0, zorder=2, color=color, edgecolor=edgecolor, hatch=hatch
        )
        if n <= 8:
            ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=1.5, rotation=90 if n > 4 else 0)
    ax.set_xticks(range(len(present)))
    ax.set_xticklabels([label for _, _, label in present])
    ax.set_xlim(-0.5, len(present) - 0.5)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    ax.legend(loc="upper right", fontsize=9, ncols=min(n, 3), framealpha=0.9)


def _plot_calibration(fig: Figure, axes: list[Axes], result: _Json) -> None:
    ax, ax_count = axes
    series = [s for s in _series(result) if isinstance(s.metrics.get("reliability"), dict)]
    ax.set_title(_title(result, "Reliability diagram, best trial of each branch (best epoch)"), fontsize=11)
    ax.plot([0, 1], [0, 1], color="0.55", linestyle=":", linewidth=1.2, label="perfect calibration", zorder=1)
    drew = False
    for s in series:
        rel = s.metrics["reliability"]
        conf, acc, count = rel.get("confidence") or [], rel.get("accuracy") or [], rel.get("count") or []
        edges = rel.get("bin_edges") or []
        pts, bars = [], []
        for i in range(min(len(conf), len(acc))):
            c, a = _num(conf[i]), _num(acc[i])
            n = _num(count[i]) if i < len(count) else None
            if c is None or a is None or n == 0:
                continue  # empty bin
            pts.append((c, a))
            if n is not None and i + 1 < len(edges) and _num(edges[i]) is not None and _num(edges[i + 1]) is not None:
                bars.append(((edges[i] + edges[i + 1]) / 2, n))
        if not pts:
            continue
        drew = True
        ece = _num(s.metrics.get("ece"))
        label = f"{s.label}: ECE {ece:.3f}" if ece is not None else s.label
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4, label=label, zorder=3, **s.style)
        total = sum(b[1] for b in bars)
        if total > 0:
            ax_count.plot(
                [b[0] for b in bars], [b[1] / total for b in bars], marker=".", markersize=4, alpha=0.85, **s.style
            )
    if not drew:
        ax.text(0.5, 0.5, "No reliability bins yet", ha="center", va="center", transform=ax.transAxes, color="0.35")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy in bin")
    ax.set_aspect("auto")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    ax_count.set_xlabel("confidence (max softmax probability)")
    ax_count.set_ylabel("share of\nsamples", fontsize=9)
    ax_count.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_count.set_ylim(bottom=0)
    ax_count.grid(True, alpha=0.3)


def _figure(kind: str, result: _Json) -> Figure:
    if kind == "calibration":
        fig, axes = _new_figure(2, height_ratios=[3.2, 1])
        _plot_calibration(fig, axes, result)
        return fig
    fig, (ax,) = _new_figure()
    {"per-class": _plot_per_class, "curves": _plot_curves, "shots": _plot_shots}[kind](fig, ax, result)
    return fig


def render_plot(kind: str, result: dict[str, Any], fmt: Literal["png", "svg"] = "png") -> bytes:
    """Render one figure of a (possibly partial) JobResult as PNG or SVG bytes.

    Raises ``ValueError`` for an unknown kind or format and ``NoFinishedTrials`` when no trial has reported an
    epoch of metrics yet.
    """
    if kind not in PLOT_KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; expected one of {', '.join(PLOT_KINDS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown plot format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _check_finished(result)
    fig = _figure(kind, result)
    buf = io.BytesIO()
    # Fixed metadata: the same result renders to the same bytes (no creation date / random SVG ids).
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    fig.clear()
    return buf.getvalue()


def render_all(result: dict[str, Any], out_dir: str | Path, fmt: Literal["png", "svg"] = "png") -> list[Path]:
    """Write ``<kind>.<fmt>`` for every plot kind into ``out_dir`` (created if missing); return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in PLOT_KINDS:
        path = out / f"{kind}.{fmt}"
        path.write_bytes(render_plot(kind, result, fmt))
        paths.append(path)
    return paths


__all__ = ["PLOT_KINDS", "NoFinishedTrials", "render_all", "render_plot"]
