"""Driver events projected into ``trials`` and ``epochs`` rows, and the read models built from them.

``record_event`` stores one driver event once (its ``(job_id, seq)`` is unique); ``apply_event`` updates the rows
it concerns and returns the job status change it asks for, which ``JobStore`` makes through its transition table.
Both run inside ``JobStore.ingest``'s transaction, with the job's row locked. The ``*_rows``, ``progress`` and
``events_after`` read models are what the API shows of a job while it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jobs.results import is_better
from service.status import JobStatus
from service.store.schema import (
    JobRecord,
    dumps,
    epochs_table,
    events_table,
    finite,
    insert_ignore,
    jobs_table,
    trials_table,
)

TRIAL_TERMINAL = frozenset({"succeeded", "stopped", "failed", "terminated", "error"})


@dataclass(frozen=True)
class StatusChange:
    """The job status an event moves the job to (from running), with its error or final result."""

    status: JobStatus
    error: str | None = None
    result: dict[str, Any] | None = None


def record_event(conn: Connection, job_id: str, event: dict[str, Any]) -> bool:
    """Store a driver event (with its integer ``seq``); False if this job's ``seq`` was stored before."""
    return insert_ignore(
        conn,
        events_table,
        {
            "job_id": job_id,
            "seq": int(event["seq"]),
            "type": str(event.get("type", "")),
            "payload": dumps(event),
            "time": float(event.get("time") or time.time()),
        },
    )


def apply_event(conn: Connection, job_id: str, event: dict[str, Any], metric: str, mode: str) -> StatusChange | None:
    """Update the trials and epochs rows a new event concerns; the job status change it asks for, if any."""
    kind = event.get("type")
    when = float(event.get("time") or time.time())
    if kind == "trial_started":
        trial = _ensure_trial(conn, job_id, str(event["trial_id"]), when)
        values: dict[str, Any] = {
            "branch": event.get("branch"),
            "branch_index": event.get("branch_index"),
            "is_control": bool(event.get("is_control", False)),
            "config": dumps(event.get("config") or {}),
            "started_at": when,
        }
        if trial["status"] == "pending":
            values["status"] = "running"
        _update_trial(conn, job_id, str(event["trial_id"]), values)
    elif kind == "epoch":
        trial_id = str(event["trial_id"])
        trial = _ensure_trial(conn, job_id, trial_id, when)
        metrics = event.get("metrics") or {}
        epoch = int(event["epoch"])
        value = finite(metrics.get(metric))
        if not insert_ignore(
            conn,
            epochs_table,
            {
                "job_id": job_id,
                "trial_id": trial_id,
                "epoch": epoch,
                "value": value,
                "metrics": dumps(metrics),
                "time": when,
            },
        ):
            return None
        values = {"epochs_reported": trial["epochs_reported"] + 1}
        if value is not None and is_better(value, trial["best_value"], mode):
            values.update(best_value=value, best_epoch=epoch)
        if trial["status"] == "pending":
            values["status"] = "running"
        _update_trial(conn, job_id, trial_id, values)
    elif kind == "trial_finished":
        trial_id = str(event["trial_id"])
        _ensure_trial(conn, job_id, trial_id, when)
        _update_trial(
            conn,
            job_id,
            trial_id,
            {
                "status": str(event.get("status") or "succeeded"),
                "error": event.get("error"),
                "finished_at": when,
            },
        )
    elif kind == "job_finished":
        if _job_status(conn, job_id).terminal:
            return None  # a final job's trials and result are immutable
        result = event.get("result") or {}
        _sync_trials_from_result(conn, job_id, result, when)
        if _job_status(conn, job_id) is JobStatus.RUNNING:
            return StatusChange(JobStatus.SUCCEEDED, result=result)
    elif kind == "job_failed":
        if _job_status(conn, job_id) is JobStatus.RUNNING:
            return StatusChange(JobStatus.FAILED, error=str(event.get("error") or "the job failed"))
    # Unknown event types are kept in the event log and otherwise ignored (newer drivers may send more).
    return None


def _job_status(conn: Connection, job_id: str) -> JobStatus:
    return JobStatus(conn.execute(sa.select(jobs_table.c.status).where(jobs_table.c.id == job_id)).scalar_one())


def _ensure_trial(conn: Connection, job_id: str, trial_id: str, when: float) -> dict[str, Any]:
    query = sa.select(trials_table).where(trials_table.c.job_id == job_id, trials_table.c.trial_id == trial_id)
    row = conn.execute(query).first()
    if row is None:
        insert_ignore(
            conn,
            trials_table,
            {"job_id": job_id, "trial_id": trial_id, "status": "pending", "epochs_reported": 0, "started_at": when},
        )
        row = conn.execute(query).one()
    return dict(row._mapping)


def _update_trial(conn: Connection, job_id: str, trial_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        trials_table.update()
        .where(trials_table.c.job_id == job_id, trials_table.c.trial_id == trial_id)
        .values(**values)
    )


def _sync_trials_from_result(conn: Connection, job_id: str, result: dict[str, Any], when: float) -> None:
    """The final JobResult is authoritative: trials whose events were lost still appear in the progress."""
    for t in result.get("trials") or []:
        trial_id = str(t.get("trial_id"))
        _ensure_trial(conn, job_id, trial_id, when)
        best = t.get("best") or {}
        _update_trial(
            conn,
            job_id,
            trial_id,
            {
                "branch": t.get("branch"),
                "branch_index": t.get("branch_index"),
                "is_control": bool(t.get("is_control", False)),
                "config": dumps(t.get("config") or {}),
                "status": str(t.get("status") or "succeeded"),
                "error": t.get("error"),
                # the job's metric is the selection metric (val_<metric>): the value it chose the epoch by
                "best_value": finite(t.get("selection_value", best.get("value"))),
                "best_epoch": best.get("epoch"),
                "epochs_reported": len(t.get("history") or []),
                "finished_at": when,
            },
        )


# -- read models ---------------------------------------------------------------------------------------------------
def trial_rows(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(trials_table)
        .where(trials_table.c.job_id == job_id)
        .order_by(trials_table.c.started_at, trials_table.c.trial_id)
    ).all()
    return [dict(r._mapping) for r in rows]


def epoch_rows(conn: Connection, job_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(epochs_table)
        .where(epochs_table.c.job_id == job_id)
        .order_by(epochs_table.c.trial_id, epochs_table.c.epoch)
    ).all()
    return [dict(r._mapping) for r in rows]


def progress(job: JobRecord, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """A job's progress from its trial rows: trials done and running, epochs reported, the best value so far."""
    done = sum(1 for t in trials if t["status"] in TRIAL_TERMINAL)
    running = sum(1 for t in trials if t["status"] in ("running", "pending"))
    best: dict[str, Any] | None = None
    for t in trials:
        if t["best_value"] is not None and is_better(t["best_value"], best["value"] if best else None, job.mode):
            best = {
                "trial_id": t["trial_id"],
                "branch": t["branch"],
                "epoch": t["best_epoch"],
                "value": t["best_value"],
            }
    return {
        "trials_total": job.trial_total,
        "trials_done": done,
        "trials_running": running if job.status is JobStatus.RUNNING else 0,
        "epochs_reported": sum(t["epochs_reported"] for t in trials),
        "metric": job.metric,
        "mode": job.mode,
        "best": best,
    }


def events_after(conn: Connection, job_id: str, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        sa.select(events_table.c.id, events_table.c.type, events_table.c.payload)
        .where(events_table.c.job_id == job_id, events_table.c.id > after_id)
        .order_by(events_table.c.id)
        .limit(limit)
    ).all()
    return [(r.id, r.type, r.payload) for r in rows]


def max_seq(conn: Connection, job_id: str) -> int | None:
    return conn.execute(sa.select(sa.func.max(events_table.c.seq)).where(events_table.c.job_id == job_id)).scalar()
