"""How many times a job resumed after its Ray cluster lost it, and why (``jobs.resumes``, ``jobs.resume_history``).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("resumes", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("resume_history", sa.Text))  # JSON: [{"time": ..., "reason": ...}, ...]


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("resume_history")
        batch.drop_column("resumes")
