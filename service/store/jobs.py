"""``JobStore``: the jobs of the service in one SQL database, and the transitions of their status.

SQLAlchemy Core over SQLite (WAL, busy timeout) or any SQLAlchemy URL; the schema is in ``service.store.schema``
and is migrated on open. Driver events are projected into trials and epochs by ``service.store.projection``, in the
transaction ``ingest`` opens here.

Races are closed in the database, so any number of service processes may share it: unique keys for idempotency
keys, ``(job, trial)``, ``(job, trial, epoch)`` and ``(job, seq)``; a submission locks its owner's ``owners`` row
before the quota check and the insert; ingesting events locks the job's row. On SQLite every write transaction is
``BEGIN IMMEDIATE`` (one writer at a time, the others wait on ``busy_timeout``); the in-process lock only spares
the threads of one process SQLite's polling busy handler.

Status follows one transition table (``TRANSITIONS``), enforced by a conditional ``UPDATE``; anything else is an
``IllegalTransition``. Driver events are idempotent: each carries the driver's sequence number, and a
``(job_id, seq)`` seen before is ignored, so a driver may resend its whole spool after the service was down.

Errors: ``NotFound`` (unknown job, or another owner's), ``IllegalTransition``, ``IdempotencyConflict``,
``QuotaExceeded`` (see ``service.errors``), ``StoreUnavailable``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.errors import IdempotencyConflict, IllegalTransition, NotFound, QuotaExceeded
from service.status import ACTIVE, TRANSITIONS, JobStatus
from service.store import projection
from service.store.schema import (
    JOB_COLUMNS,
    JobRecord,
    dumps,
    epochs_table,
    events_table,
    insert_ignore,
    jobs_table,
    owners_table,
    trials_table,
    upgrade,
)

_SOURCES: dict[JobStatus, list[str]] = {
    new: [str(old) for old, targets in TRANSITIONS.items() if new in targets] for new in JobStatus
}


def encode_cursor(num: int) -> str:
    return base64.urlsafe_b64encode(f"n:{num}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("n:"):
            raise ValueError
        num = int(text[2:])
        if not 0 <= num < 2**62 or len(text) > 24:
            raise ValueError
        return num
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


def new_job_id() -> str:
    return "job_" + secrets.token_hex(8)


class JobStore:
    """Jobs, trials, epochs and events in one SQL database. Thread-safe; every method is one transaction."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        sa_url = sa.make_url(url)
        self.is_sqlite = sa_url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            if sa_url.database and sa_url.database != ":memory:":
                Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(url, **kwargs)
        # Not needed for correctness (BEGIN IMMEDIATE is): it queues this process's SQLite writers in order instead
        # of letting them poll in SQLite's busy handler.
        self._write_lock = threading.RLock() if self.is_sqlite else _NullLock()
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        try:
            self._migrate()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            self.engine.dispose()
            reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            where = sa_url.render_as_string(hide_password=True)
            raise StoreUnavailable(f"cannot open the job store at {where}: {reason}") from exc

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring the schema to Alembic's head in one transaction (concurrent openers wait for each other)."""
        with self._write() as conn:
            upgrade(conn)

    def schema_version(self) -> str:
        """The Alembic revision of the database."""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` on SQLite (see ``_sqlite_begin``)."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    # -- jobs ------------------------------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        owner: str,
        spec: dict[str, Any],
        run_spec: str,
        name: str,
        metric: str,
        mode: str,
        trial_total: int,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        max_active: int | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; returns (job, created). An idempotency key seen before returns that job.

        The owner's row is locked first: one owner's submissions are checked and inserted one after the other, so
        concurrent ones with one key make one job, and a quota of Q admits exactly Q.
        """
        with self._write() as conn:
            insert_ignore(conn, owners_table, {"owner": owner})
            conn.execute(sa.select(owners_table.c.owner).where(owners_table.c.owner == owner).with_for_update())
            if idempotency_key is not None:
                row = conn.execute(
                    sa.select(*JOB_COLUMNS, jobs_table.c.body_hash).where(
                        jobs_table.c.owner == owner, jobs_table.c.idempotency_key == idempotency_key
                    )
                ).first()
                if row is not None:
                    if row._mapping["body_hash"] != body_hash:
                        raise IdempotencyConflict(
                            "this Idempotency-Key was used with a different body", {"job_id": row._mapping["id"]}
                        )
                    return JobRecord.from_row(row), False
            if max_active is not None:
                active = conn.execute(
                    sa.select(sa.func.count()).where(
                        jobs_table.c.owner == owner, jobs_table.c.status.in_([str(s) for s in ACTIVE])
                    )
                ).scalar_one()
                if active >= max_active:
                    raise QuotaExceeded(
                        f"owner {owner!r} has {active} queued or running jobs, the limit is {max_active}",
                        {"active": active, "limit": max_active},
                    )
            job_id = new_job_id()
            now = time.time()
            conn.execute(
                jobs_table.insert().values(
                    id=job_id,
                    owner=owner,
                    name=name,
                    spec=dumps(spec),
                    run_spec=run_spec,
                    status=str(JobStatus.QUEUED),
                    metric=metric,
                    mode=mode,
                    trial_total=trial_total,
                    created_at=now,
                    idempotency_key=idempotency_key,
                    body_hash=body_hash,
                )
            )
            self._status_event(conn, job_id, JobStatus.QUEUED, None, now)
            row = conn.execute(sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id)).one()
            return JobRecord.from_row(row), True

    def find_idempotent(self, owner: str, key: str) -> tuple[JobRecord, str | None] | None:
        """The job created with this owner's idempotency key, and the hash of its body."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(*JOB_COLUMNS, jobs_table.c.body_hash).where(
                    jobs_table.c.owner == owner, jobs_table.c.idempotency_key == key
                )
            ).first()
        return None if row is None else (JobRecord.from_row(row), row._mapping["body_hash"])

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord:
        query = sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id)
        if owner is not None:
            query = query.where(jobs_table.c.owner == owner)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        return JobRecord.from_row(row)

    def delete_job(self, job_id: str, owner: str) -> JobRecord:
        """Delete a finished job of ``owner`` with its trials, epochs and events (one transaction); returns it.

        Raises:
            NotFound: no such job of this owner.
            IllegalTransition: the job is queued or running (cancel it first).
        """
        with self._write() as conn:
            row = conn.execute(
                sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id, jobs_table.c.owner == owner)
            ).first()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            job = JobRecord.from_row(row)
            if not job.status.terminal:
                raise IllegalTransition(
                    f"job {job_id} is {job.status}: cancel it before deleting it", {"status": str(job.status)}
                )
            for table in (epochs_table, trials_table, events_table):
                conn.execute(sa.delete(table).where(table.c.job_id == job_id))
            conn.execute(sa.delete(jobs_table).where(jobs_table.c.id == job_id))
        return job

    def list_jobs(
        self, *, owner: str | None, statuses: Iterable[JobStatus] = (), limit: int = 50, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; ``cursor`` is the ``next_cursor`` of the previous page."""
        query = sa.select(*JOB_COLUMNS).order_by(jobs_table.c.num.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(jobs_table.c.owner == owner)
        wanted = [str(s) for s in statuses]
        if wanted:
            query = query.where(jobs_table.c.status.in_(wanted))
        if cursor is not None:
            query = query.where(jobs_table.c.num < decode_cursor(cursor))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        jobs = [JobRecord.from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(jobs[-1].num) if len(rows) > limit else None
        return jobs, next_cursor

    def jobs_with_status(self, status: JobStatus, limit: int | None = None) -> list[JobRecord]:
        """Oldest first (the dispatch order)."""
        query = sa.select(*JOB_COLUMNS).where(jobs_table.c.status == str(status)).order_by(jobs_table.c.num)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).all()]

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        *,
        error: str | None = None,
        submission_id: str | None = None,
        secret_hash: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Move a job to ``new`` if the transition table allows it from its current status."""
        with self._write() as conn:
            self._transition(
                conn, job_id, new, error=error, submission_id=submission_id, secret_hash=secret_hash, result=result
            )
            return JobRecord.from_row(conn.execute(sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

    def _transition(
        self,
        conn: Connection,
        job_id: str,
        new: JobStatus,
        *,
        error: str | None = None,
        submission_id: str | None = None,
        secret_hash: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        new = JobStatus(new)
        now = time.time()
        values: dict[str, Any] = {"status": str(new)}
        if new is JobStatus.RUNNING:
            values["started_at"] = now
        if new.terminal:
            values["finished_at"] = now
        if error is not None:
            values["error"] = error
        if submission_id is not None:
            values["submission_id"] = submission_id
        if secret_hash is not None:
            values["secret_hash"] = secret_hash
        if result is not None:
            values["result"] = dumps(result)
        updated = conn.execute(
            jobs_table.update()
            .where(jobs_table.c.id == job_id, jobs_table.c.status.in_(_SOURCES[new]))
            .values(**values)
        ).rowcount
        if updated != 1:
            current = conn.execute(sa.select(jobs_table.c.status).where(jobs_table.c.id == job_id)).scalar()
            if current is None:
                raise NotFound(f"job {job_id!r} not found")
            raise IllegalTransition(
                f"job {job_id} is {current}; it cannot become {new}", {"status": current, "requested": str(new)}
            )
        self._status_event(conn, job_id, new, error, now)

    def prepare_dispatch(self, job_id: str, submission_id: str, secret_hash: str) -> bool:
        """Record the Ray submission id and the driver secret's hash of a still-queued job; False if not queued."""
        with self._write() as conn:
            return (
                conn.execute(
                    jobs_table.update()
                    .where(jobs_table.c.id == job_id, jobs_table.c.status == str(JobStatus.QUEUED))
                    .values(submission_id=submission_id, secret_hash=secret_hash)
                ).rowcount
                == 1
            )

    def record_resume(
        self, job_id: str, *, submission_id: str, secret_hash: str, reason: str, max_resumes: int
    ) -> JobRecord | None:
        """A running job is dispatched again to resume: count it, say why, take the new submission and secret.

        None (and nothing changed) when the job is no longer running or resumed ``max_resumes`` times already.
        """
        with self._write() as conn:
            row = conn.execute(
                sa.select(jobs_table.c.status, jobs_table.c.resumes, jobs_table.c.resume_history)
                .where(jobs_table.c.id == job_id)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            if row.status != str(JobStatus.RUNNING) or row.resumes >= max_resumes:
                return None
            now = time.time()
            history = [*json.loads(row.resume_history or "[]"), {"time": now, "reason": reason}]
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id)
                .values(
                    resumes=row.resumes + 1,
                    resume_history=dumps(history),
                    submission_id=submission_id,
                    secret_hash=secret_hash,
                )
            )
            payload = {"type": "resumed", "job_id": job_id, "resumes": row.resumes + 1, "reason": reason, "time": now}
            conn.execute(
                events_table.insert().values(job_id=job_id, seq=None, type="resumed", payload=dumps(payload), time=now)
            )
            return JobRecord.from_row(conn.execute(sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

    def set_driver_secret(self, job_id: str, secret_hash: str) -> JobRecord | None:
        """A running job's driver gets a new secret (its submission is retried); None if it is not running."""
        with self._write() as conn:
            updated = conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id, jobs_table.c.status == str(JobStatus.RUNNING))
                .values(secret_hash=secret_hash)
            ).rowcount
            if updated != 1:
                return None
            return JobRecord.from_row(conn.execute(sa.select(*JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

    def _status_event(self, conn: Connection, job_id: str, status: JobStatus, error: str | None, now: float) -> None:
        payload = {"type": "status", "job_id": job_id, "status": str(status), "error": error, "time": now}
        conn.execute(
            events_table.insert().values(job_id=job_id, seq=None, type="status", payload=dumps(payload), time=now)
        )

    def count_active(self, owner: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(
                    jobs_table.c.owner == owner, jobs_table.c.status.in_([str(s) for s in ACTIVE])
                )
            ).scalar_one()

    def counts_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs_table.c.status, sa.func.count()).group_by(jobs_table.c.status)).all()
        counts = {str(s): 0 for s in JobStatus}
        counts.update(dict(rows))
        return counts

    def trials_running(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(trials_table.join(jobs_table, jobs_table.c.id == trials_table.c.job_id))
                .where(jobs_table.c.status == str(JobStatus.RUNNING), trials_table.c.status == "running")
            ).scalar_one()

    def result_json(self, job_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(jobs_table.c.result).where(jobs_table.c.id == job_id)).scalar()

    # -- driver events ---------------------------------------------------------------------------------------------
    def ingest(self, job_id: str, events: list[dict[str, Any]]) -> tuple[int, int]:
        """Persist driver events (each with an integer ``seq``) and apply them; returns (accepted, duplicates).

        Events may arrive out of order or more than once. Job status changes only while the job is queued or
        running: a cancelled job stays cancelled whatever its driver still sends.
        """
        accepted = duplicates = 0
        with self._write() as conn:
            job = conn.execute(  # locked: one job's batches apply one after the other, in any process
                sa.select(jobs_table.c.status, jobs_table.c.metric, jobs_table.c.mode)
                .where(jobs_table.c.id == job_id)
                .with_for_update()
            ).first()
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            for event in sorted(events, key=lambda e: e["seq"]):
                if not projection.record_event(conn, job_id, event):
                    duplicates += 1
                    continue
                accepted += 1
                change = projection.apply_event(conn, job_id, event, job.metric, job.mode)
                if change is not None:
                    self._transition(conn, job_id, change.status, error=change.error, result=change.result)
        return accepted, duplicates

    # -- reading progress, trials, events --------------------------------------------------------------------------
    def trial_rows(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return projection.trial_rows(conn, job_id)

    def epoch_rows(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return projection.epoch_rows(conn, job_id)

    def progress(self, job: JobRecord) -> dict[str, Any]:
        return projection.progress(job, self.trial_rows(job.id))

    def events_after(self, job_id: str, after_id: int = 0, limit: int = 500) -> list[tuple[int, str, str]]:
        """(id, type, payload JSON) of the events stored after ``after_id``, in arrival order."""
        with self.engine.connect() as conn:
            return projection.events_after(conn, job_id, after_id, limit)

    def max_seq(self, job_id: str) -> int | None:
        with self.engine.connect() as conn:
            return projection.max_seq(conn, job_id)


class StoreUnavailable(RuntimeError):
    """The database cannot be reached (or opened) at start."""


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # the driver's implicit BEGIN off: _sqlite_begin emits it
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own BEGIN is off (see _sqlite_pragmas): reads begin DEFERRED, writes IMMEDIATE, so a write
    # transaction holds the write lock from its first read and cannot lose a read-then-write race.
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
