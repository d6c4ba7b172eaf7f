"""The JobResult (docs/ARCHITECTURE.md), built from trial events; pure Python (no Ray, no torch).

``ResultCollector`` turns the events of a search into the JobResult (the job driver uses it while Tune runs);
``summarize`` derives the best trial, the control and each branch's gain over it from a list of trials, and is
shared by the collector and by the service's partial results of a running job.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from jobs.spec import JobSpec

# The key of a trial report that carries the epoch's full metrics dict as JSON (the scalars sit beside it).
METRICS_JSON = "metrics_json"


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


def summarize(
    trials: Sequence[dict[str, Any]], mode: str, branches: Sequence[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """``best_trial``, ``control_trial_id`` and per-branch ``branches`` (best trial, gain over the control).

    ``trials`` have ``trial_id``, ``branch``, ``branch_index``, ``is_control``, ``config`` and ``best``
    (``{"epoch", "value", "metrics"}`` or None). ``branches`` lists the spec's (key, loss name) in order, so a
    branch without results yet still has its row; without it, the rows come from the trials. The gain is the
    improvement in the direction of ``mode``: positive always means better than the control.
    """
    scored = [t for t in trials if t.get("best") and t["best"].get("value") is not None]
    best = None
    for t in scored:
        if best is None or is_better(t["best"]["value"], best["value"], mode):
            best = {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "epoch": t["best"]["epoch"],
                "value": t["best"]["value"],
                "config": t.get("config"),
            }
    control = next((t for t in trials if t.get("is_control")), None)
    control_value = control["best"]["value"] if control and control.get("best") else None
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
        top = None
        for t in own:
            if top is None or is_better(t["best"]["value"], top["best"]["value"], mode):
                top = t
        value = top["best"]["value"] if top else None
        gain = None
        if value is not None and control_value is not None and not math.isnan(value):
            gain = value - control_value if mode == "max" else control_value - value
        rows.append(
            {
                "branch": key,
                "branch_index": index,
                "loss": loss,
                "trials": sum(1 for t in trials if t.get("branch_index") == index and not t.get("is_control")),
                "best_trial_id": top["trial_id"] if top else None,
                "best_value": value,
                "best_epoch": top["best"]["epoch"] if top else None,
                "best_config": top.get("config") if top else None,
                "control_value": control_value,
                "gain": gain,
                "best_metrics": scalars(top["best"].get("metrics") or {}) if top else None,
            }
        )
    return {"best_trial": best, "control_trial_id": control["trial_id"] if control else None, "branches": rows}


class ResultCollector:
    """Builds the JobResult from events; thread-safe (Tune's callbacks and the caller may read at once)."""

    def __init__(self, spec: JobSpec, dataset_meta: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.metric = spec.tune.metric
        self.mode = spec.tune.resolved_mode
        self.dataset = dataset_meta or {}
        self.trials: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (trial_started / epoch / trial_finished) into the result; others are ignored."""
        with self._lock:
            kind = event["type"]
            if kind == "trial_started":
                t = self.trials.setdefault(event["trial_id"], {"history": [], "final": None, "best": None})
                t.update(
                    trial_id=event["trial_id"],
                    branch=event["branch"],
                    branch_index=event["branch_index"],
                    is_control=event["is_control"],
                    config=event["config"],
                    status="running",
                    error=None,
                    checkpoint_path=t.get("checkpoint_path"),
                )
            elif kind == "epoch":
                t = self.trials[event["trial_id"]]
                metrics = event["metrics"]
                t["history"] = [h for h in t["history"] if h["epoch"] != event["epoch"]] + [scalars(metrics)]
                t["history"].sort(key=lambda h: h["epoch"])
                t["final"] = metrics
                value = metrics.get(self.metric)
                if t["best"] is None or is_better(value, t["best"]["value"], self.mode):
                    t["best"] = {"epoch": event["epoch"], "value": value, "metrics": metrics}
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
        """The JobResult as it stands (complete once every trial has finished)."""
        with self._lock:
            trials = sorted(self.trials.values(), key=lambda t: (t.get("branch_index", 0), t["trial_id"]))
            trials = [dict(t) for t in trials]
        summary = summarize(trials, self.mode, [(b.key, b.name) for b in self.spec.losses])
        return {
            "job_name": self.spec.name,
            "metric": self.metric,
            "mode": self.mode,
            "best_scope": "best_epoch",
            "dataset": self.dataset,
            "trials": trials,
            **summary,
        }
