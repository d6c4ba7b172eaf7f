"""Results of a job: the stored JobResult when the job is done, else one built from the trials and epochs so far.

The partial result has the JobResult shape of docs/ARCHITECTURE.md (``dataset`` is null until the driver sends the
final result), so clients and plots read both the same way.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.results import scalars, summarize
from service.store import JobRecord, JobStore


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
        history = [{**scalars(m), "epoch": r["epoch"]} for r, m in zip(rows, full, strict=False)]
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
        **summarize(out_trials, job.mode, [(b.get("label") or b["name"], b["name"]) for b in job.spec["losses"]]),
    }
