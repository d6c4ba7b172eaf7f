"""The persistent job store: SQLAlchemy Core over SQLite (WAL, busy timeout) or any SQLAlchemy URL.

Tables: ``jobs``, ``trials``, ``epochs``, ``events`` and ``owners``; the schema is created and migrated on open with
Alembic (``service/migrations``; a database of the hand-rolled ``schema_version`` 1 is stamped and upgraded).
Everything the API shows comes from here, written as it happens.

Races are closed in the database, so any number of service processes may share it: unique keys for idempotency
keys, ``(job, trial)``, ``(job, trial, epoch)`` and ``(job, seq)``; a submission locks its owner's ``owners`` row
before the quota check and the insert; ingesting events locks the job's row. On SQLite every write transaction is
``BEGIN IMMEDIATE`` (one writer at a time, the others wait on ``busy_timeout``); the in-process lock only spares
the threads of one process SQLite's polling busy handler.

Status follows one transition table (``TRANSITIONS``), enforced by a conditional ``UPDATE``; anything else is an
``IllegalTransition``. Driver events are idempotent: each carries the driver's sequence number, and a
``(job_id, seq)`` seen before is ignored, so a driver may resend its whole spool after the service was down.

Errors: ``NotFound`` (unknown job, or another owner's), ``IllegalTransition``, ``IdempotencyConflict``,
``QuotaExceeded`` (see ``service.errors``).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from jobs.results import is_better
from service.errors import IdempotencyConflict, IllegalTransition, NotFound, QuotaExceeded
from service.status import ACTIVE, TRANSITIONS, JobStatus

SCHEMA_VERSION = "0003"  # the Alembic head revision
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


_SOURCES: dict[JobStatus, list[str]] = {
    new: [str(old) for old, targets in TRANSITIONS.items() if new in targets] for new in JobStatus
}

TRIAL_TERMINAL = frozenset({"succeeded", "stopped", "failed", "terminated", "error"})

metadata = sa.MetaData()

jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("num", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("run_spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("trial_total", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("body_hash", sa.String(64)),
    sa.Column("submission_id", sa.String(128)),
    sa.Column("secret_hash", sa.String(64)),
    sa.Column("result", sa.Text),
    sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resume_history", sa.Text),
    sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
    sa.Index("ix_jobs_owner_num", "owner", "num"),
    sa.Index("ix_jobs_status", "status"),
)

trials_table = sa.Table(
    "trials",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("trial_id", sa.String(128), primary_key=True),
    sa.Column("branch", sa.String(128)),
    sa.Column("branch_index", sa.Integer),
    sa.Column("is_control", sa.Boolean),
    sa.Column("config", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("best_value", sa.Float),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("epochs_reported", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
)

epochs_table = sa.Table(
    "epochs",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("trial_id", sa.String(128), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("value", sa.Float),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("time", sa.Float, nullable=False),
)

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("seq", sa.Integer),  # the driver's sequence number; NULL for the service's own status events
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.UniqueConstraint("job_id", "seq", name="uq_events_job_seq"),
    sa.Index("ix_events_job_id", "job_id", "id"),
)

owners_table = sa.Table("owners", metadata, sa.Column("owner", sa.String(200), primary_key=True))


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    name: str
    spec: dict[str, Any]
    run_spec: str
    status: JobStatus
    metric: str
    mode: str
    trial_total: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    submission_id: str | None
    secret_hash: str | None
    idempotency_key: str | None
    num: int
    resumes: int = 0
    resume_history: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            owner=m["owner"],
            name=m["name"],
            spec=json.loads(m["spec"]),
            run_spec=m["run_spec"],
            status=JobStatus(m["status"]),
            metric=m["metric"],
            mode=m["mode"],
            trial_total=m["trial_total"],
            created_at=m["created_at"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            error=m["error"],
            submission_id=m["submission_id"],
            secret_hash=m["secret_hash"],
            idempotency_key=m["idempotency_key"],
            num=m["num"],
            resumes=m["resumes"],
            resume_history=tuple(json.loads(m["resume_history"] or "[]")),
        )


_JOB_COLUMNS = [c for c in jobs_table.c if c.name != "result"]


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:  # NaN or infinity somewhere: strict JSON has none, store them as null
        return json.dumps(_json_finite(value), separators=(",", ":"), allow_nan=False, default=str)


def _json_finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_finite(v) for v in value]
    return value


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


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
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7271100)"))  # one migrator at a time
            tables = set(sa.inspect(conn).get_table_names())
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = conn
            if "jobs" in tables and "alembic_version" not in tables:
                # Created before Alembic: the hand-rolled schema_version 1 is revision 0001.
                version = conn.execute(sa.text("SELECT version FROM schema_version")).scalar()
                if version != 1:
                    raise RuntimeError(f"the store's schema_version is {version!r}; this release migrates from 1")
                command.stamp(config, "0001")
            command.upgrade(config, "head")

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
            _insert_ignore(conn, owners_table, {"owner": owner})
            conn.execute(sa.select(owners_table.c.owner).where(owners_table.c.owner == owner).with_for_update())
            if idempotency_key is not None:
                row = conn.execute(
                    sa.select(*_JOB_COLUMNS, jobs_table.c.body_hash).where(
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
                    spec=_dumps(spec),
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
            row = conn.execute(sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id)).one()
            return JobRecord.from_row(row), True

    def find_idempotent(self, owner: str, key: str) -> tuple[JobRecord, str | None] | None:
        """The job created with this owner's idempotency key, and the hash of its body."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(*_JOB_COLUMNS, jobs_table.c.body_hash).where(
                    jobs_table.c.owner == owner, jobs_table.c.idempotency_key == key
                )
            ).first()
        return None if row is None else (JobRecord.from_row(row), row._mapping["body_hash"])

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord:
        query = sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id)
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
                sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id, jobs_table.c.owner == owner)
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
        query = sa.select(*_JOB_COLUMNS).order_by(jobs_table.c.num.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(jobs_table.c.owner == owner)
        statuses = [str(s) for s in statuses]
        if statuses:
            query = query.where(jobs_table.c.status.in_(statuses))
        if cursor is not None:
            query = query.where(jobs_table.c.num < decode_cursor(cursor))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        jobs = [JobRecord.from_row(r) for r in rows[:limit]]
        next_cursor = encode_cursor(jobs[-1].num) if len(rows) > limit else None
        return jobs, next_cursor

    def jobs_with_status(self, status: JobStatus, limit: int | None = None) -> list[JobRecord]:
        """Oldest first (the dispatch order)."""
        query = sa.select(*_JOB_COLUMNS).where(jobs_table.c.status == str(status)).order_by(jobs_table.c.num)
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
            return JobRecord.from_row(conn.execute(sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

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
            values["result"] = _dumps(result)
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
                    resume_history=_dumps(history),
                    submission_id=submission_id,
                    secret_hash=secret_hash,
                )
            )
            payload = {"type": "resumed", "job_id": job_id, "resumes": row.resumes + 1, "reason": reason, "time": now}
            conn.execute(
                events_table.insert().values(job_id=job_id, seq=None, type="resumed", payload=_dumps(payload), time=now)
            )
            return JobRecord.from_row(conn.execute(sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

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
            return JobRecord.from_row(conn.execute(sa.select(*_JOB_COLUMNS).where(jobs_table.c.id == job_id)).one())

    def _status_event(self, conn: Connection, job_id: str, status: JobStatus, error: str | None, now: float) -> None:
        payload = {"type": "status", "job_id": job_id, "status": str(status), "error": error, "time": now}
        conn.execute(
            events_table.insert().values(job_id=job_id, seq=None, type="status", payload=_dumps(payload), time=now)
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
            metric, mode = job.metric, job.mode
            for event in sorted(events, key=lambda e: e["seq"]):
                now = time.time()
                inserted = _insert_ignore(
                    conn,
                    events_table,
                    {
                        "job_id": job_id,
                        "seq": int(event["seq"]),
                        "type": str(event.get("type", "")),
                        "payload": _dumps(event),
                        "time": float(event.get("time") or now),
                    },
                )
                if not inserted:
                    duplicates += 1
                    continue
                accepted += 1
                self._apply(conn, job_id, event, metric, mode)
        return accepted, duplicates

    def _apply(self, conn: Connection, job_id: str, event: dict[str, Any], metric: str, mode: str) -> None:
        kind = event.get("type")
        when = float(event.get("time") or time.time())
        if kind == "trial_started":
            trial = self._ensure_trial(conn, job_id, str(event["trial_id"]), when)
            values = {
                "branch": event.get("branch"),
                "branch_index": event.get("branch_index"),
                "is_control": bool(event.get("is_control", False)),
                "config": _dumps(event.get("config") or {}),
                "started_at": when,
            }
            if trial["status"] == "pending":
                values["status"] = "running"
            self._update_trial(conn, job_id, str(event["trial_id"]), values)
        elif kind == "epoch":
            trial_id = str(event["trial_id"])
            trial = self._ensure_trial(conn, job_id, trial_id, when)
            metrics = event.get("metrics") or {}
            epoch = int(event["epoch"])
            value = _finite(metrics.get(metric))
            if not _insert_ignore(
                conn,
                epochs_table,
                {
                    "job_id": job_id,
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "value": value,
                    "metrics": _dumps(metrics),
                    "time": when,
                },
            ):
                return
            values: dict[str, Any] = {"epochs_reported": trial["epochs_reported"] + 1}
            if value is not None and is_better(value, trial["best_value"], mode):
                values.update(best_value=value, best_epoch=epoch)
            if trial["status"] == "pending":
                values["status"] = "running"
            self._update_trial(conn, job_id, trial_id, values)
        elif kind == "trial_finished":
            trial_id = str(event["trial_id"])
            self._ensure_trial(conn, job_id, trial_id, when)
            self._update_trial(
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
            if self._job_status(conn, job_id).terminal:
                return  # a final job's trials and result are immutable
            result = event.get("result") or {}
            self._sync_trials_from_result(conn, job_id, result, when)
            if self._job_status(conn, job_id) is JobStatus.RUNNING:
                self._transition(conn, job_id, JobStatus.SUCCEEDED, result=result)
        elif kind == "job_failed":
            if self._job_status(conn, job_id) is JobStatus.RUNNING:
                self._transition(conn, job_id, JobStatus.FAILED, error=str(event.get("error") or "the job failed"))
        # Unknown event types are kept in the event log and otherwise ignored (newer drivers may send more).

    def _job_status(self, conn: Connection, job_id: str) -> JobStatus:
        return JobStatus(conn.execute(sa.select(jobs_table.c.status).where(jobs_table.c.id == job_id)).scalar_one())

    def _ensure_trial(self, conn: Connection, job_id: str, trial_id: str, when: float) -> dict[str, Any]:
        query = sa.select(trials_table).where(trials_table.c.job_id == job_id, trials_table.c.trial_id == trial_id)
        row = conn.execute(query).first()
        if row is None:
            _insert_ignore(
                conn,
                trials_table,
                {"job_id": job_id, "trial_id": trial_id, "status": "pending", "epochs_reported": 0, "started_at": when},
            )
            row = conn.execute(query).one()
        return dict(row._mapping)

    def _update_trial(self, conn: Connection, job_id: str, trial_id: str, values: dict[str, Any]) -> None:
        conn.execute(
            trials_table.update()
            .where(trials_table.c.job_id == job_id, trials_table.c.trial_id == trial_id)
            .values(**values)
        )

    def _sync_trials_from_result(self, conn: Connection, job_id: str, result: dict[str, Any], when: float) -> None:
        """The final JobResult is authoritative: trials whose events were lost still appear in the progress."""
        for t in result.get("trials") or []:
            trial_id = str(t.get("trial_id"))
            self._ensure_trial(conn, job_id, trial_id, when)
            best = t.get("best") or {}
            self._update_trial(
                conn,
                job_id,
                trial_id,
                {
                    "branch": t.get("branch"),
                    "branch_index": t.get("branch_index"),
                    "is_control": bool(t.get("is_control", False)),
                    "config": _dumps(t.get("config") or {}),
                    "status": str(t.get("status") or "succeeded"),
                    "error": t.get("error"),
                    # the job's metric is the selection metric (val_<metric>): the value it chose the epoch by
                    "best_value": _finite(t.get("selection_value", best.get("value"))),
                    "best_epoch": best.get("epoch"),
                    "epochs_reported": len(t.get("history") or []),
                    "finished_at": when,
                },
            )

    # -- reading progress, trials, events --------------------------------------------------------------------------
    def trial_rows(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(trials_table)
                .where(trials_table.c.job_id == job_id)
                .order_by(trials_table.c.started_at, trials_table.c.trial_id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def epoch_rows(self, job_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(epochs_table)
                .where(epochs_table.c.job_id == job_id)
                .order_by(epochs_table.c.trial_id, epochs_table.c.epoch)
            ).all()
        return [dict(r._mapping) for r in rows]

    def progress(self, job: JobRecord) -> dict[str, Any]:
        trials = self.trial_rows(job.id)
        done = sum(1 for t in trials if t["status"] in TRIAL_TERMINAL)
        running = sum(1 for t in trials if t["status"] in ("running", "pending"))
        best: dict[str, Any] | None = None
        for t in trials:
            if t["best_value"] is not None and is_better(t["best_value"], best and best["value"], job.mode):
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

    def events_after(self, job_id: str, after_id: int = 0, limit: int = 500) -> list[tuple[int, str, str]]:
        """(id, type, payload JSON) of the events stored after ``after_id``, in arrival order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events_table.c.id, events_table.c.type, events_table.c.payload)
                .where(events_table.c.job_id == job_id, events_table.c.id > after_id)
                .order_by(events_table.c.id)
                .limit(limit)
            ).all()
        return [(r.id, r.type, r.payload) for r in rows]

    def max_seq(self, job_id: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.max(events_table.c.seq)).where(events_table.c.job_id == job_id)
            ).scalar()


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


def _insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary/unique key exists; True when a row was inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - other databases: a savepoint and the integrity error
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(**values))
            return True
        except sa.exc.IntegrityError:
            return False
    statement = insert(table).values(**values).on_conflict_do_nothing()
    if dialect == "postgresql":  # psycopg reports no rowcount for an INSERT with (implicit) RETURNING
        return conn.execute(statement.returning(sa.literal_column("1"))).first() is not None
    return conn.execute(statement).rowcount == 1
