"""The persistent job store: SQLAlchemy Core over SQLite (WAL, busy timeout) or any SQLAlchemy URL.

Tables: ``jobs``, ``trials``, ``epochs``, ``events`` and ``owners``; the schema is created and migrated on open with
Alembic (``service/migrations``; a database of the hand-rolled ``schema_version`` 1 is stamped and upgraded).
Everything the API shows comes from here, written as it happens.

- ``service.store.schema``: the tables, ``SCHEMA_VERSION`` and the Alembic upgrade; ``JobRecord`` (a jobs row).
- ``service.store.jobs``: ``JobStore``, creating, reading and deleting jobs and moving them through ``TRANSITIONS``.
- ``service.store.projection``: driver events into trials and epochs rows; progress and the event log.
"""

from service.status import ACTIVE, TRANSITIONS, JobStatus
from service.store.jobs import JobStore, StoreUnavailable, decode_cursor, encode_cursor, new_job_id
from service.store.projection import TRIAL_TERMINAL
from service.store.schema import (
    MIGRATIONS_DIR,
    SCHEMA_VERSION,
    JobRecord,
    epochs_table,
    events_table,
    jobs_table,
    metadata,
    owners_table,
    trials_table,
)

__all__ = [
    "ACTIVE",
    "MIGRATIONS_DIR",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "TRIAL_TERMINAL",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "StoreUnavailable",
    "decode_cursor",
    "encode_cursor",
    "epochs_table",
    "events_table",
    "jobs_table",
    "metadata",
    "new_job_id",
    "owners_table",
    "trials_table",
]
