"""Results of a job: the stored JobResult when the job is done, else one built from the trials and epochs so far.

The partial result is a ``jobs.results.JobResult`` (``dataset`` is null until the driver sends the final result):
each trial's selected epoch, each branch's config and paired gain are computed from the stored epoch metrics exactly
as the driver computes them (``jobs.results.summarize``), so clients and plots read both the same way.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.results import JobResult, result_header, scalars, summarize_spec, trial_identity
from jobs.spec import JobSpec
from service.store import JobRecord, JobStore


def partial_result(store: JobStore, job: JobRecord) -> dict[str, Any]:
    """A JobResult (as JSON-able data) from what the store holds now."""
    spec = JobSpec.model_validate(job.spec)
    trials = store.trial_rows(job.id)
    epochs_by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in store.epoch_rows(job.id):
        epochs_by_trial.setdefault(row["trial_id"], []).append(row)
    out_trials = []
    for t in trials:
        rows = epochs_by_trial.get(t["trial_id"], [])
        full = [json.loads(r["metrics"]) for r in rows]
        config = json.loads(t["config"]) if t["config"] else None
        out_trials.append(
            {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "branch_index": t["branch_index"],
                "is_control": bool(t["is_control"]),
                "config": config,
                **trial_identity(config),
                "status": t["status"],
                "error": t["error"],
                "history": [{**scalars(m), "epoch": r["epoch"]} for r, m in zip(rows, full, strict=False)],
                "full": {r["epoch"]: m for r, m in zip(rows, full, strict=False)},
                "final": full[-1] if full else None,
                "checkpoint_path": None,
            }
        )
    summary = summarize_spec(spec, out_trials)
    for t in out_trials:
        t.pop("full", None)
        t.pop("score", None)
    result = JobResult.model_validate({**result_header(spec), "dataset": None, "trials": out_trials, **summary})
    return result.model_dump(mode="json")
