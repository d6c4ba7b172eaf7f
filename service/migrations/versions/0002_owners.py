"""Alembic takes over from ``schema_version``; an ``owners`` row per job owner, locked to check quotas.

``JobStore.create_job`` locks its owner's row (``SELECT ... FOR UPDATE``) before it counts that owner's active
jobs and inserts, so two submissions of one owner cannot both pass the quota check. Owners of existing jobs are
filled in.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("owners", sa.Column("owner", sa.String(200), primary_key=True))
    op.execute("INSERT INTO owners (owner) SELECT DISTINCT owner FROM jobs")
    op.drop_table("schema_version")


def downgrade() -> None:
    schema_version = op.create_table("schema_version", sa.Column("version", sa.Integer, nullable=False))
    op.bulk_insert(schema_version, [{"version": 1}])
    op.drop_table("owners")
