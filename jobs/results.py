"""The JobResult (docs/ARCHITECTURE.md): one typed model, built from trial events; no Ray, no torch.

How a result is chosen (``JobSpec.evaluation``):

- A trial's **selected epoch** is the epoch with the best *selection metric* (``val_<metric>`` with selection "val",
  the test ``<metric>`` with selection "test"), or its last epoch with ``evaluation.epoch: "last"``. Its
  ``selected`` holds that epoch's validation and test metrics; ``best`` (kept for older readers) is the same epoch
  with the test metric as ``value``.
- Trials of one planned config share a ``config_id`` and differ by ``seed`` (``tune.repeats``). A branch's
  **config** is the one with the best mean selection metric over its seeds; its row reports the test metric's mean
  and standard deviation over those seeds, and the **gain**: the mean of the paired differences against the control
  run with the same seed (positive = better in the metric's mode), its standard deviation and a 95% Student-t
  confidence interval (n - 1 degrees of freedom; null for a single pair). ``significant``: the interval excludes 0.
- The **control** (``control_summary``) is reported as a branch row is: its config with the best mean selection
  metric, the test metric's mean and standard deviation over its seeds, the metrics' mean over the seeds and each
  seed's selected epoch (no gain: it is the reference). ``control_posthoc`` ("CE + post-hoc LA") carries a gain over
  the raw control and ``significant`` by the branches' rule.
- ``best_trial`` is the trial with the best selection metric.

``ResultCollector`` folds the events of a search into the JobResult (the job driver uses it while Tune runs);
``summarize`` derives everything above from a list of trials and is shared by the collector and by the service's
partial results of a running job, which rebuild the trials from the stored epoch metrics.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.spec import METRICS, JobSpec

# The key of a trial report that carries the epoch's full metrics dict as JSON (the scalars sit beside it).
METRICS_JSON = "metrics_json"
# The key of a trial report that carries the trial's selection value so far (Tune's metric: ASHA and TPE use it).
SELECTION_SCORE = "selection_score"
# The report key Ray ranks a trial's checkpoints by (``jobs.tune._keep_checkpoints``; the value comes from
# ``jobs.train.checkpoint_score``): the selection metric, with ties going to the earlier epoch, as the results select
# (the first best epoch). Without the tie-break Ray could keep a later epoch of equal value and drop the selected
# one's checkpoint.
CHECKPOINT_SCORE = "checkpoint_score"
VAL_PREFIX = "val_"


KEEP_CHOICES = ("selected", "selected+last", "all")


def keep_checkpoints_setting(value: str | None = None) -> str:
    """``LONGTAIL_KEEP_CHECKPOINTS`` (default ``selected+last``), checked.

    Raises:
        ValueError: naming the choices.
    """
    value = value if value is not None else os.environ.get("LONGTAIL_KEEP_CHECKPOINTS", "selected+last")
    if value not in KEEP_CHOICES:
        raise ValueError(f"LONGTAIL_KEEP_CHECKPOINTS must be one of {list(KEEP_CHOICES)}, got {value!r}")
    return value


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` under ``mode`` ("max" | "min"); None/NaN never beats, anything beats None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value > best if mode == "max" else value < best


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar (history-worthy) entries of a metrics dict."""
    return {k: v for k, v in metrics.items() if v is None or isinstance(v, (int, float, str))}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------
class _Model(BaseModel):
    # extra="allow": a result stored by an older or newer driver still reads; every field below has a default or
    # is always present, so the published schema says what a reader can count on.
    model_config = ConfigDict(extra="allow")

    # Read access by key as well (``trial["best"]["value"]``): the result was a plain dict before it was typed.
    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields or key in (self.model_extra or {}):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class Selected(_Model):
    """A trial's selected epoch with its validation and test metrics (``val`` is null without a validation split)."""

    epoch: int
    val: dict[str, float | None] | None = None
    test: dict[str, float | None] = Field(default_factory=dict)


class TrialBest(_Model):
    """The selected epoch as older readers know it: ``value`` is the test metric there, ``metrics`` all of them."""

    epoch: int | None = None
    value: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class TrialResult(_Model):
    trial_id: str
    branch: str | None = None
    branch_index: int | None = None
    is_control: bool = False
    config: dict[str, Any] | None = None
    config_id: str | None = Field(None, description="Shared by the repeats (seeds) of one planned config.")
    seed: int | None = Field(None, description="The trial's train seed (train.seed + repeat index).")
    status: str | None = None
    error: str | None = None
    history: list[dict[str, Any]] = Field(default_factory=list, description="Scalar metrics per epoch, val_* too.")
    final: dict[str, Any] | None = None
    best: TrialBest | None = None
    selected: Selected | None = None
    selection_value: float | None = Field(None, description="The selection metric at the selected epoch.")
    posthoc: dict[str, Any] | None = Field(
        None,
        description="Post-hoc adjustment at the selected epoch (chosen on validation): method, tau, chosen_on, val "
        "and test metrics; `la` the same for logit adjustment alone.",
    )
    checkpoint_path: str | None = None


class BestTrial(_Model):
    trial_id: str
    branch: str | None = None
    epoch: int | None = None
    value: float | None = Field(None, description="The test metric at the selected epoch.")
    selection_value: float | None = Field(None, description="The selection metric at the selected epoch.")
    config: dict[str, Any] | None = None
    config_id: str | None = None
    seed: int | None = None


class PosthocSummary(_Model):
    """A config's post-hoc variant over its seeds (a branch's ``posthoc``, or ``control_posthoc``)."""

    method: str | None = None
    tau: float | None = Field(None, description="The top seed's tau (chosen on validation).")
    taus: list[float | None] = Field(default_factory=list, description="Each seed's tau, in seed order.")
    test_mean: float | None = Field(None, description="The post-hoc test metric's mean over the seeds.")
    test_std: float | None = None
    raw_test_mean: float | None = Field(None, description="The same trials' raw test metric, mean over the seeds.")
    gain_vs_raw: float | None = Field(None, description="Mean of the paired differences with the same trial's raw.")
    gain: float | None = Field(None, description="Mean paired difference against the raw control's same seed.")
    gain_ci95: tuple[float, float] | None = Field(None, description="Student t, n - 1 df; null for one pair.")
    gain_std: float | None = None
    significant: bool = Field(
        False, description="The gain's interval excludes 0 (as a branch's); false in a result stored without it."
    )
    n_seeds: int = 0
    n_pairs: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, description="The post-hoc test metrics, mean over seeds.")


class ControlSummary(_Model):
    """The control's config over its seeds, reported as a branch row reports its own (it is the reference: no gain)."""

    config_id: str | None = Field(None, description="The control's config with the best mean selection metric.")
    n_seeds: int = 0
    trial_ids: list[str] = Field(default_factory=list, description="The config's seeds' trials, in seed order.")
    val_mean: float | None = None
    test_mean: float | None = None
    test_std: float | None = None
    best_metrics: dict[str, Any] | None = Field(
        None,
        description="The metrics at the selected epoch, mean over the seeds (the keys a branch's best_metrics has).",
    )
    seed_epochs: list[int] = Field(
        default_factory=list, description="The selected epoch of each of the control's seeds, in seed order."
    )


class BranchResult(_Model):
    branch: str
    branch_index: int
    loss: str | None = None
    trials: int = 0
    config_id: str | None = Field(None, description="The branch's config with the best mean selection metric.")
    config: dict[str, Any] | None = None
    n_seeds: int = 0
    val_mean: float | None = None
    test_mean: float | None = None
    test_std: float | None = None
    gain: float | None = Field(
        None, description="Mean paired difference of the test metric against the control's same seed (+ = better)."
    )
    gain_std: float | None = None
    gain_ci95: tuple[float, float] | None = Field(None, description="Student t, n - 1 df; null for one pair.")
    significant: bool = False
    n_pairs: int = 0
    best_trial_id: str | None = Field(None, description="The config's seed with the best selection metric.")
    best_value: float | None = Field(None, description="test_mean (kept for older readers).")
    best_epoch: int | None = None
    best_config: dict[str, Any] | None = None
    control_value: float | None = Field(None, description="The control's test mean over the paired seeds.")
    best_metrics: dict[str, Any] | None = Field(
        None,
        description="The metrics at the selected epoch (test, val_*, post-hoc, train_loss), mean over the config's "
        "seeds; epochs, learning rates and times are not averaged (see seed_epochs).",
    )
    seed_epochs: list[int] = Field(
        default_factory=list, description="The selected epoch of each of the config's seeds, in seed order."
    )
    posthoc: PosthocSummary | None = Field(
        None,
        description="The config's post-hoc variant (the top seed's method and tau): test mean of the metric over its "
        "seeds, gain_vs_raw (paired with the same trial's raw figure) and gain vs the raw control (same seed).",
    )


class JobResult(_Model):
    """The result of a job: every trial, the best one, and per branch the chosen config and its gain."""

    job_name: str
    metric: str
    mode: Literal["max", "min"]
    best_scope: str = Field("best_epoch", description="best_epoch or last_epoch (evaluation.epoch).")
    selected_on: Literal["val", "test"] = "test"
    selection_metric: str | None = None
    repeats: int = 1
    dataset: dict[str, Any] | None = None
    trials: list[TrialResult] = Field(default_factory=list)
    best_trial: BestTrial | None = None
    control_trial_id: str | None = None
    control_config_id: str | None = None
    control_summary: ControlSummary | None = Field(
        None, description="The control over its seeds (null without a control, and in a result of an older driver)."
    )
    control_posthoc: PosthocSummary | None = Field(
        None, description='"CE + post-hoc LA": the control with logit adjustment (tau chosen on validation).'
    )
    branches: list[BranchResult] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Selection and statistics (pure)
# --------------------------------------------------------------------------------------------------------------
def select_epoch(
    history: Sequence[dict[str, Any]], selection_metric: str, mode: str, epoch: str = "best"
) -> int | None:
    """Index into ``history`` of the selected epoch: the first with the best ``selection_metric``, or the last."""
    if not history:
        return None
    if epoch == "last":
        return len(history) - 1
    best, at = None, None
    for i, h in enumerate(history):
        if is_better(_number(h.get(selection_metric)), best, mode):
            best, at = _number(h.get(selection_metric)), i
    return at


def selected_metrics(row: dict[str, Any]) -> tuple[dict[str, float | None] | None, dict[str, float | None]]:
    """(val, test) metrics of one history row: the named metrics, val ones without their prefix."""
    test = {k: _number(row[k]) for k in METRICS if k in row}
    val = {k: _number(row[VAL_PREFIX + k]) for k in METRICS if VAL_PREFIX + k in row}
    return (val or None), test


def student_t_ci95(values: Sequence[float]) -> tuple[float, float] | None:
    """Two-sided 95% confidence interval of the mean (Student t, n - 1 df); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t as student_t

    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def finish_trial(t: dict[str, Any], metric: str, mode: str, selection_metric: str, epoch: str = "best") -> None:
    """Set a trial's ``selected``, ``best`` and ``selection_value`` (also as ``score``) from its history, in place.

    ``t["full"]`` (optional) maps an epoch number to its full metrics dict, which ``best.metrics`` then holds.
    """
    history = t.get("history") or []
    i = select_epoch(history, selection_metric, mode, epoch)
    if i is None or _number(history[i].get(selection_metric)) is None:
        t["selected"], t["best"], t["score"], t["selection_value"] = None, None, None, None
        return
    row = history[i]
    val, test = selected_metrics(row)
    t["selected"] = {"epoch": int(row["epoch"]), "val": val, "test": test}
    full = (t.get("full") or {}).get(int(row["epoch"])) or row
    t["best"] = {"epoch": int(row["epoch"]), "value": _number(row.get(metric)), "metrics": full}
    t["score"] = t["selection_value"] = _number(row.get(selection_metric))
    t["posthoc"] = posthoc_block(row, full if full is not row else None)


POSTHOC = "posthoc_"
POSTHOC_LA = "posthoc_la_"


def posthoc_block(row: dict[str, Any], full: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The post-hoc figures of one history row (see ``lt_core.engine.posthoc_metrics``), or None without them.

    The row holds the job metric of the chosen variants; with the epoch's ``full`` metrics (their post-hoc grids)
    every metric of the chosen variants is filled in.
    """
    if row.get("posthoc_method") is None:
        return None
    grids = (full or {}).get("posthoc") or {}

    def from_grid(method: str, tau: Any, split: str) -> dict[str, float | None]:
        grid = (grids.get(split) or {}).get(method)
        taus = grids.get("taus") or []
        if not grid or tau not in taus:
            return {}
        return {k: _number(v) for k, v in grid[taus.index(tau)].items()}

    def figures(prefix: str, split: str) -> dict[str, float | None] | None:
        key = (VAL_PREFIX if split == "val" else "") + prefix
        out = {k[len(key) :]: _number(v) for k, v in row.items() if k.startswith(key)}
        if prefix == POSTHOC:
            out = {k: v for k, v in out.items() if not k.startswith("la_")}
        out = {k: v for k, v in out.items() if k not in ("method", "tau", "chosen_on")}
        return out or None

    method, tau, la_tau = row["posthoc_method"], _number(row.get("posthoc_tau")), _number(row.get("posthoc_la_tau"))

    def merged(prefix: str, split: str, m: str, t: float | None) -> dict[str, float | None] | None:
        out = {**from_grid(m, t, split), **(figures(prefix, split) or {})}
        return out or None

    return {
        "method": method,
        "tau": tau,
        "chosen_on": row.get("posthoc_chosen_on"),
        "val": merged(POSTHOC, "val", method, tau),
        "test": merged(POSTHOC, "test", method, tau) or {},
        "la": {
            "method": "logit_adjustment",
            "tau": la_tau,
            "val": merged(POSTHOC_LA, "val", "logit_adjustment", la_tau),
            "test": merged(POSTHOC_LA, "test", "logit_adjustment", la_tau) or {},
        },
    }


def _posthoc_value(t: dict[str, Any], metric: str | None, la: bool = False) -> float | None:
    block = t.get("posthoc") or {}
    if la:
        block = block.get("la") or {}
    return _number((block.get("test") or {}).get(metric or ""))


def _posthoc_row(
    seeds: Sequence[dict[str, Any]],
    top: dict[str, Any] | None,
    metric: str | None,
    mode: str,
    control_by_seed: dict[Any, dict[str, Any]] | None,
    la: bool = False,
) -> dict[str, Any] | None:
    """A branch's (or the control's) post-hoc figures: mean test metric, gain vs raw (same trial) and vs control."""
    values = [(t, v) for t in seeds if (v := _posthoc_value(t, metric, la)) is not None]
    if not values or len(values) != len(seeds) or top is None:
        return None

    def block_of(t: dict[str, Any]) -> dict[str, Any]:
        block = t.get("posthoc") or {}
        return (block.get("la") or {}) if la else block

    method, tau = block_of(top).get("method"), block_of(top).get("tau")
    vs_raw = [_gain(v, t["best"]["value"], mode) for t, v in values]
    by_seed = control_by_seed or {}
    pairs = [(v, by_seed[t.get("seed")]) for t, v in values if t.get("seed") in by_seed]
    vs_control = [_gain(v, c["best"]["value"], mode) for v, c in pairs]
    ci = student_t_ci95(vs_control) if vs_control else None
    return {
        "method": method,
        "tau": tau,
        "taus": [block_of(t).get("tau") for t, _ in values],
        "test_mean": _mean([v for _, v in values]),
        "test_std": statistics.stdev([v for _, v in values]) if len(values) > 1 else None,
        "raw_test_mean": _mean([t["best"]["value"] for t, _ in values]),
        "gain_vs_raw": _mean(vs_raw),
        "gain": _mean(vs_control) if vs_control else None,
        "gain_ci95": ci,
        "significant": _significant(ci),
        "gain_std": statistics.stdev(vs_control) if len(vs_control) > 1 else None,
        "n_seeds": len(values),
        "n_pairs": len(vs_control),
        "metrics": _mean_metrics([block_of(t).get("test") or {} for t, _ in values]),
    }


def _significant(ci: tuple[float, float] | None) -> bool:
    """Whether a gain's 95% interval excludes 0 (false without one)."""
    return bool(ci is not None and (ci[0] > 0 or ci[1] < 0))


def _gain(value: float, control: float, mode: str) -> float:
    return value - control if mode == "max" else control - value


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(
    trials: Sequence[dict[str, Any]],
    mode: str,
    branches: Sequence[tuple[str, str]] | None = None,
    *,
    metric: str | None = None,
    selection_metric: str | None = None,
    epoch: str = "best",
) -> dict[str, Any]:
    """``best_trial``, ``control_trial_id``, ``control_config_id``, ``control_summary``, ``control_posthoc`` and
    per-branch ``branches``.

    ``trials`` have ``trial_id``, ``branch``, ``branch_index``, ``is_control``, ``config``, ``config_id``, ``seed``
    and ``history``; with ``metric`` given, each one's ``selected``/``best`` are (re)computed from its history by
    ``selection_metric`` (default: ``metric``) and ``epoch``. Without ``metric`` the trials' ``best`` are taken as
    they are (``best.value`` is then both the selection and the reported value: a result of an older driver).
    ``branches`` lists the spec's (key, loss name) in order, so a branch without results yet still has its row.
    """
    if metric is not None:
        for t in trials:
            finish_trial(t, metric, mode, selection_metric or metric, epoch)
    else:
        for t in trials:
            t.setdefault("score", t.get("selection_value", (t.get("best") or {}).get("value")))
    scored = [t for t in trials if t.get("score") is not None and (t.get("best") or {}).get("value") is not None]

    best = None
    for t in scored:
        if best is None or is_better(t["score"], best["selection_value"], mode):
            best = {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "epoch": t["best"]["epoch"],
                "value": t["best"]["value"],
                "selection_value": t["score"],
                "config": t.get("config"),
                "config_id": t.get("config_id"),
                "seed": t.get("seed"),
            }

    def groups(members: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for t in members:
            out.setdefault(str(t.get("config_id") or t["trial_id"]), []).append(t)
        return out

    def best_group(members: Sequence[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
        top_id, top, top_mean = None, [], None
        for cid, seeds in groups(members).items():
            mean = _mean([t["score"] for t in seeds])
            if top_id is None or is_better(mean, top_mean, mode):
                top_id, top, top_mean = cid, seeds, mean
        return top_id, top

    control_all = [t for t in trials if t.get("is_control")]
    control_id, control_seeds = best_group([t for t in scored if t.get("is_control")])
    control_first = control_seeds[0] if control_seeds else (control_all[0] if control_all else None)
    control_seeds = _seed_order(control_seeds)
    control_by_seed = {t.get("seed"): t for t in control_seeds}

    if branches is None:
        seen: dict[int, tuple[str, str]] = {}
        for t in trials:
            if not t.get("is_control") and t.get("branch_index") is not None:
                seen.setdefault(t["branch_index"], (t["branch"], t.get("loss") or t["branch"]))
        indexed = sorted(seen.items())
    else:
        indexed = list(enumerate(branches))
    rows = []
    for index, (key, loss) in indexed:
        own = [t for t in scored if t.get("branch_index") == index and not t.get("is_control")]
        config_id, seeds = best_group(own)
        seeds = _seed_order(seeds)
        tests, vals = _tests_and_vals(seeds, metric)
        top = None
        for t in seeds:
            if top is None or is_better(t["score"], top["score"], mode):
                top = t
        pairs = [(t, control_by_seed[t.get("seed")]) for t in seeds if t.get("seed") in control_by_seed]
        diffs = [_gain(t["best"]["value"], c["best"]["value"], mode) for t, c in pairs]
        ci = student_t_ci95(diffs)
        rows.append(
            {
                "branch": key,
                "branch_index": index,
                "loss": loss,
                "trials": sum(1 for t in trials if t.get("branch_index") == index and not t.get("is_control")),
                "config_id": config_id,
                "config": _config_only(top.get("config")) if top else None,
                "n_seeds": len(seeds),
                "val_mean": _mean(vals) if len(vals) == len(seeds) else None,
                "test_mean": _mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else None,
                "gain": _mean(diffs),
                "gain_std": statistics.stdev(diffs) if len(diffs) > 1 else None,
                "gain_ci95": ci,
                "significant": _significant(ci),
                "n_pairs": len(diffs),
                "best_trial_id": top["trial_id"] if top else None,
                "best_value": _mean(tests),
                "best_epoch": top["best"]["epoch"] if top else None,
                "best_config": top.get("config") if top else None,
                "control_value": _mean([c["best"]["value"] for _, c in pairs]) if pairs else None,
                "best_metrics": _seed_mean_metrics(seeds) if top else None,
                "seed_epochs": _seed_epochs(seeds),
                "posthoc": _posthoc_row(seeds, top, metric, mode, control_by_seed),
            }
        )
    control_top = None
    for t in control_seeds:
        if control_top is None or is_better(t["score"], control_top["score"], mode):
            control_top = t
    control_tests, control_vals = _tests_and_vals(control_seeds, metric)
    return {
        "best_trial": best,
        "control_trial_id": control_first["trial_id"] if control_first else None,
        "control_config_id": control_id,
        "control_summary": {
            "config_id": control_id,
            "n_seeds": len(control_seeds),
            "trial_ids": [t["trial_id"] for t in control_seeds],
            "val_mean": _mean(control_vals) if len(control_vals) == len(control_seeds) else None,
            "test_mean": _mean(control_tests),
            "test_std": statistics.stdev(control_tests) if len(control_tests) > 1 else None,
            "best_metrics": _seed_mean_metrics(control_seeds),
            "seed_epochs": _seed_epochs(control_seeds),
        }
        if control_seeds
        else None,
        "control_posthoc": _posthoc_row(control_seeds, control_top, metric, mode, control_by_seed, la=True),
        "branches": rows,
    }


def _seed_order(seeds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(seeds, key=lambda t: (t.get("seed") is None, t.get("seed") or 0, t["trial_id"]))


def _tests_and_vals(seeds: Sequence[dict[str, Any]], metric: str | None) -> tuple[list[float], list[float]]:
    """The seeds' test metric (``best.value``) and, where they have one, their validation metric."""
    tests = [t["best"]["value"] for t in seeds]
    vals = [v for t in seeds if (v := _number(((t.get("selected") or {}).get("val") or {}).get(metric or "")))]
    return tests, vals


def _seed_mean_metrics(seeds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics at the seeds' selected epochs, mean over the seeds."""
    return _mean_metrics([_metrics_only(t["best"].get("metrics") or {}) for t in seeds])


def _seed_epochs(seeds: Sequence[dict[str, Any]]) -> list[int]:
    return [int(t["best"]["epoch"]) for t in seeds if t["best"].get("epoch") is not None]


# What differs between the repeats of one config; "seed" is how a result stored before the path scheme named it.
_IDENTITY_KEYS = ("train.seed", "config_id", "seed")


def _config_only(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A trial's config without what differs between the repeats of one config (the seed, the config id)."""
    if config is None:
        return None
    return {k: v for k, v in config.items() if k not in _IDENTITY_KEYS}


_METRIC_PREFIXES = (VAL_PREFIX, POSTHOC_LA, POSTHOC)  # stripped in this order: val_posthoc_la_nll -> nll


def is_metric(key: str) -> bool:
    """Whether an epoch's metrics entry is a metric (worth a mean over seeds): a named metric, on the test or the
    validation split, raw or post-hoc, or the training loss. Not: the epoch, the learning rate, times, a chosen tau."""
    for prefix in _METRIC_PREFIXES:
        key = key.removeprefix(prefix)
    return key in METRICS or key == "train_loss"


def _metrics_only(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scalars(metrics).items() if is_metric(k)}


def _mean_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the mean of the numbers over ``rows`` (a key missing or non-numeric in some row is left out)."""
    if not rows:
        return {}
    out: dict[str, Any] = {}
    for k in rows[0]:
        values = [_number(r.get(k)) for r in rows]
        if all(v is not None for v in values):
            out[k] = statistics.fmean(values)  # type: ignore[arg-type]
    return out


def result_header(spec: JobSpec) -> dict[str, Any]:
    """The JobResult fields that come from the spec alone."""
    return {
        "job_name": spec.name,
        "metric": spec.tune.metric,
        "mode": spec.tune.resolved_mode,
        "best_scope": "best_epoch" if spec.evaluation.epoch == "best" else "last_epoch",
        "selected_on": spec.evaluation.selection,
        "selection_metric": spec.selection_metric,
        "repeats": spec.tune.repeats,
    }


def summarize_spec(spec: JobSpec, trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``summarize`` with the spec's metric, selection and branches."""
    return summarize(
        trials,
        spec.tune.resolved_mode,
        [(b.key, b.name) for b in spec.losses],
        metric=spec.tune.metric,
        selection_metric=spec.selection_metric,
        epoch=spec.evaluation.epoch,
    )


def trial_identity(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config_id`` and ``seed`` (``train.seed``) of a trial, carried in its config (the store keeps the config as
    JSON; a config stored before the path scheme has its seed as ``seed``)."""
    config = config or {}
    seed = config.get("train.seed", config.get("seed"))
    return {"config_id": config.get("config_id"), "seed": int(seed) if isinstance(seed, (int, float)) else None}


class ResultCollector:
    """Builds the JobResult from events; thread-safe (Tune's callbacks and the caller may read at once)."""

    def __init__(self, spec: JobSpec, dataset_meta: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.metric = spec.tune.metric
        self.mode = spec.tune.resolved_mode
        self.selection_metric = spec.selection_metric
        self.dataset = dataset_meta or {}
        self.trials: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (trial_started / epoch / trial_finished) into the result; others are ignored."""
        with self._lock:
            kind = event["type"]
            if kind == "trial_started":
                t = self.trials.setdefault(event["trial_id"], {"history": [], "final": None, "full": {}})
                t.update(
                    trial_id=event["trial_id"],
                    branch=event["branch"],
                    branch_index=event["branch_index"],
                    is_control=event["is_control"],
                    config=event["config"],
                    status="running",
                    error=None,
                    checkpoint_path=t.get("checkpoint_path"),
                    **trial_identity(event["config"]),
                )
            elif kind == "epoch":
                t = self.trials[event["trial_id"]]
                metrics = event["metrics"]
                epoch = int(event["epoch"])
                t["history"] = [h for h in t["history"] if h["epoch"] != epoch] + [scalars(metrics)]
                t["history"].sort(key=lambda h: h["epoch"])
                t["final"] = metrics
                # Keep the full metrics (per-class lists, calibration bins) of the epochs that may end up selected:
                # the best so far by the selection metric, and the latest.
                keep = {epoch}
                i = select_epoch(t["history"], self.selection_metric, self.mode, self.spec.evaluation.epoch)
                if i is not None:
                    keep.add(int(t["history"][i]["epoch"]))
                t["full"] = {e: m for e, m in ({**t["full"], epoch: metrics}).items() if e in keep}
                if event.get("checkpoint_path"):
                    t["checkpoint_path"] = event["checkpoint_path"]
            elif kind == "trial_finished":
                t = self.trials[event["trial_id"]]
                t["status"], t["error"] = event["status"], event.get("error")

    def set_checkpoint(self, trial_id: str, path: str) -> None:
        """Record where a trial's latest checkpoint lives (known only once the runner has persisted it)."""
        with self._lock:
            if trial_id in self.trials:
                self.trials[trial_id]["checkpoint_path"] = path

    def result(self) -> dict[str, Any]:
        """The JobResult as it stands (complete once every trial has finished), as validated JSON-able data."""
        with self._lock:
            trials = sorted(self.trials.values(), key=lambda t: (t.get("branch_index", 0), t["trial_id"]))
            trials = [dict(t) for t in trials]
        summary = summarize_spec(self.spec, trials)
        for t in trials:
            t.pop("full", None)
            t.pop("score", None)
        result = JobResult.model_validate(
            {**result_header(self.spec), "dataset": self.dataset, "trials": trials, **summary}
        )
        return result.model_dump(mode="json")
