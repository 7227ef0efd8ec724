"""versioned task contracts: task_types, worker_task_types; jobs.task_version; strict queues

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("task_version", sa.String(32)))
        batch.add_column(sa.Column("version_major", sa.Integer))
        batch.add_column(sa.Column("version_minor", sa.Integer))
        batch.add_column(sa.Column("version_patch", sa.Integer))
    available = "state = 2"
    op.create_index(
        "ix_jobs_dispatch_type",
        "jobs",
        ["queue", "task_type", sa.text("priority DESC"), "run_at", "id"],
        sqlite_where=sa.text(available),
        postgresql_where=sa.text(available),
    )
    with op.batch_alter_table("queues") as batch:
        batch.add_column(
            sa.Column("strict_task_types", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "task_types",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("major", sa.Integer, primary_key=True),
        sa.Column("minor", sa.Integer, primary_key=True),
        sa.Column("patch", sa.Integer, primary_key=True),
        sa.Column("message_type", sa.String(512), nullable=False),
        sa.Column("descriptors", sa.LargeBinary, nullable=False),
        sa.Column("registered_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "worker_task_types",
        sa.Column("worker_id", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("task_type", sa.String(128), primary_key=True),
        sa.Column("major", sa.Integer, primary_key=True),
        sa.Column("minor", sa.Integer),
        sa.Column("patch", sa.Integer),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_worker_task_types_queue", "worker_task_types", ["queue", "seen_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_task_types_queue", "worker_task_types")
    op.drop_table("worker_task_types")
    op.drop_table("task_types")
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("strict_task_types")
    op.drop_index("ix_jobs_dispatch_type", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("version_patch")
        batch.drop_column("version_minor")
        batch.drop_column("version_major")
        batch.drop_column("task_version")
