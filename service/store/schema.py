"""The store's tables, their Alembic migrations, and how values are written into them.

``metadata`` and the ``*_table`` objects are what the queries of ``service.store.jobs`` and
``service.store.projection`` are built from; the schema of a database is Alembic's (``service/migrations``), and
``upgrade`` brings one to ``SCHEMA_VERSION``. ``JobRecord`` is a row of ``jobs`` read by attribute.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from service.status import JobStatus

SCHEMA_VERSION = "0003"  # the Alembic head revision
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

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


def upgrade(conn: Connection) -> None:
    """Bring the schema to Alembic's head inside ``conn``'s transaction (concurrent openers wait for each other)."""
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


JOB_COLUMNS = [c for c in jobs_table.c if c.name != "result"]  # a JobRecord's columns (the result is read apart)


def dumps(value: Any) -> str:
    """A JSON column's text: compact, and strict (NaN and infinity become null)."""
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


def finite(value: Any) -> float | None:
    """A float column's value: the number if it is a finite one, else NULL."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary/unique key exists; True when a row was inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing()).rowcount == 1
    if dialect == "postgresql":  # psycopg reports no rowcount for an INSERT with (implicit) RETURNING
        statement = postgresql.insert(table).values(**values).on_conflict_do_nothing()
        return conn.execute(statement.returning(sa.literal_column("1"))).first() is not None
    try:  # pragma: no cover - other databases: a savepoint and the integrity error
        with conn.begin_nested():
            conn.execute(table.insert().values(**values))
        return True
    except sa.exc.IntegrityError:
        return False
