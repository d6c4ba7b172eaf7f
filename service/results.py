"""Results of a job: the stored JobResult when the job is done, else one built from the trials and epochs so far.

The partial result has the JobResult shape of docs/ARCHITECTURE.md (``dataset`` is null until the driver sends the
final result), so clients and plots read both the same way.
"""

from __future__ import annotations

import json
from typing import Any

from service.store import JobRecord, JobStore, _is_better


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if v is None or (isinstance(v, (int, float, str)) and k != "epoch")}


def partial_result(store: JobStore, job: JobRecord) -> dict[str, Any]:
    """A JobResult-shaped dict from what the store holds now."""
    trials = store.trial_rows(job.id)
    epochs_by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in store.epoch_rows(job.id):
        epochs_by_trial.setdefault(row["trial_id"], []).append(row)
    out_trials = []
    for t in trials:
        rows = epochs_by_trial.get(t["trial_id"], [])
        full = [json.loads(r["metrics"]) for r in rows]
        history = [{"epoch": r["epoch"], **_scalars(m)} for r, m in zip(rows, full, strict=False)]
        best = None
        if t["best_epoch"] is not None:
            best_metrics = next((m for r, m in zip(rows, full, strict=False) if r["epoch"] == t["best_epoch"]), {})
            best = {"epoch": t["best_epoch"], "value": t["best_value"], "metrics": best_metrics}
        out_trials.append(
            {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "branch_index": t["branch_index"],
                "is_control": bool(t["is_control"]),
                "config": json.loads(t["config"]) if t["config"] else None,
                "status": t["status"],
                "error": t["error"],
                "history": history,
                "final": full[-1] if full else None,
                "best": best,
                "checkpoint_path": None,
            }
        )
    return {
        "job_name": job.name,
        "metric": job.metric,
        "mode": job.mode,
        "best_scope": "best_epoch",
        "dataset": None,
        "trials": out_trials,
        **summarize(out_trials, job.mode),
    }


def summarize(trials: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """best_trial, control_trial_id and per-branch gains over the control, from trials with a ``best``."""
    best_trial = None
    control = next((t for t in trials if t["is_control"]), None)
    control_value = control["best"]["value"] if control and control["best"] else None
    branches: dict[tuple[Any, Any], dict[str, Any]] = {}
    for t in trials:
        if not t["best"] or t["best"]["value"] is None:
            continue
        value = t["best"]["value"]
        if best_trial is None or _is_better(value, best_trial["value"], mode):
            best_trial = {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "epoch": t["best"]["epoch"],
                "value": value,
                "config": t["config"],
            }
        if t["is_control"]:
            continue
        key = (t["branch_index"], t["branch"])
        current = branches.get(key)
        if current is None or _is_better(value, current["best_value"], mode):
            gain = None
            if control_value is not None:
                gain = value - control_value if mode == "max" else control_value - value
            branches[key] = {
                "branch": t["branch"],
                "branch_index": t["branch_index"],
                "best_trial_id": t["trial_id"],
                "best_value": value,
                "control_value": control_value,
                "gain": gain,
                "best_metrics": _scalars(t["best"]["metrics"] or {}),
            }
    ordered = sorted(branches.values(), key=lambda b: (b["branch_index"] is None, b["branch_index"] or 0))
    return {
        "best_trial": best_trial,
        "control_trial_id": control["trial_id"] if control else None,
        "branches": ordered,
    }
