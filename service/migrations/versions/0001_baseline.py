"""The schema before Alembic (the hand-rolled ``schema_version`` 1): jobs, trials, epochs, events.

A database created by that code is stamped at this revision when first opened, then upgraded.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
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
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
    )
    op.create_index("ix_jobs_owner_num", "jobs", ["owner", "num"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "trials",
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
        sa.Column("epochs_reported", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_table(
        "epochs",
        sa.Column("job_id", sa.String(40), primary_key=True),
        sa.Column("trial_id", sa.String(128), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("value", sa.Float),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.UniqueConstraint("job_id", "seq", name="uq_events_job_seq"),
    )
    op.create_index("ix_events_job_id", "events", ["job_id", "id"])
    schema_version = op.create_table("schema_version", sa.Column("version", sa.Integer, nullable=False))
    op.bulk_insert(schema_version, [{"version": 1}])


def downgrade() -> None:
    for table in ("schema_version", "events", "epochs", "trials", "jobs"):
        op.drop_table(table)
