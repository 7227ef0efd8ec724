"""queue_counts: maintained job counts per queue, task type and state (store/counts.py);
jobs.traceparent: the producer's W3C trace context; ix_jobs_parent: a job's children

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(55)))
    op.create_index(
        "ix_jobs_parent",
        "jobs",
        ["parent_job_id"],
        sqlite_where=sa.text("parent_job_id IS NOT NULL"),
        postgresql_where=sa.text("parent_job_id IS NOT NULL"),
    )
    op.create_table(
        "queue_counts",
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("task_type", sa.String(128), primary_key=True),
        sa.Column("state", sa.SmallInteger, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    # The jobs already stored are counted once here; the transitions keep it exact from now on.
    op.execute(
        "INSERT INTO queue_counts (queue, task_type, state, n) "
        "SELECT queue, task_type, state, COUNT(*) FROM jobs GROUP BY queue, task_type, state"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_parent", table_name="jobs")
    op.drop_table("queue_counts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("traceparent")
