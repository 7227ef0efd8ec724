"""jobs and job_attempts

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEDULED, AVAILABLE, LEASED = 1, 2, 3


def _partial(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("task_type", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("run_at", sa.BigInteger, nullable=False),
        sa.Column("delay", sa.BigInteger, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("lease_duration", sa.BigInteger, nullable=False),
        sa.Column("retry_initial_backoff", sa.BigInteger, nullable=False),
        sa.Column("retry_multiplier", sa.Float, nullable=False),
        sa.Column("retry_max_backoff", sa.BigInteger, nullable=False),
        sa.Column("retry_jitter", sa.Float, nullable=False),
        sa.Column("idempotency_key", sa.String(256)),
        sa.Column("parent_job_id", sa.String(32)),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("lease_token", sa.String(32)),
        sa.Column("leased_by", sa.String(200)),
        sa.Column("leased_at", sa.BigInteger),
        sa.Column("lease_expires_at", sa.BigInteger),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("checkpoint", sa.LargeBinary),
        sa.Column("result", sa.LargeBinary),
        sa.Column("error_message", sa.Text),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_non_retryable", sa.Boolean),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
    )
    op.create_index(
        "ix_jobs_dispatch",
        "jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        **_partial(f"state = {AVAILABLE}"),
    )
    op.create_index("ix_jobs_scheduled", "jobs", ["run_at"], **_partial(f"state = {SCHEDULED}"))
    op.create_index("ix_jobs_leased", "jobs", ["lease_expires_at"], **_partial(f"state = {LEASED}"))
    op.create_index(
        "uq_jobs_idempotency",
        "jobs",
        ["queue", "idempotency_key"],
        unique=True,
        **_partial("idempotency_key IS NOT NULL"),
    )
    op.create_index("ix_jobs_queue_id", "jobs", ["queue", "id"])
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("error_message", sa.Text),
        sa.Column("error_type", sa.String(200)),
        sa.Column("error_non_retryable", sa.Boolean),
    )
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_attempts")
    op.drop_table("jobs")
