"""queues, throttle buckets, schedules; jobs.throttle_key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEASED = 3


def _partial(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("throttle_key", sa.String(256)))
    op.create_index("ix_jobs_leased_queue", "jobs", ["queue"], **_partial(f"state = {LEASED}"))
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["queue", "state", "finished_at"],
        **_partial("state IN (4, 5, 6)"),
    )
    op.create_table(
        "queues",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("rate", sa.Float),
        sa.Column("burst", sa.Integer),
        sa.Column("key_rate", sa.Float),
        sa.Column("key_burst", sa.Integer),
        sa.Column("max_concurrency", sa.Integer, nullable=False),
        sa.Column("default_max_attempts", sa.Integer),
        sa.Column("default_lease_duration", sa.BigInteger),
        sa.Column("default_retry_initial_backoff", sa.BigInteger),
        sa.Column("default_retry_multiplier", sa.Float),
        sa.Column("default_retry_max_backoff", sa.BigInteger),
        sa.Column("default_retry_jitter", sa.Float),
        sa.Column("retain_succeeded", sa.BigInteger),
        sa.Column("retain_failed", sa.BigInteger),
        sa.Column("retain_cancelled", sa.BigInteger),
        sa.Column("tokens", sa.Float),
        sa.Column("tokens_at", sa.BigInteger),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("window_count", sa.Integer, nullable=False),
        sa.Column("previous_window_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # Queues that already hold jobs exist from now on too.
    op.execute(
        "INSERT INTO queues (name, paused, max_concurrency, window_start, window_count, "
        "previous_window_count, created_at) "
        "SELECT queue, false, 0, 0, 0, 0, MIN(created_at) FROM jobs GROUP BY queue"
    )
    op.create_table(
        "throttle_buckets",
        sa.Column("queue", sa.String(128), primary_key=True),
        sa.Column("throttle_key", sa.String(256), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("job_template", sa.LargeBinary, nullable=False),
        sa.Column("misfire_policy", sa.SmallInteger, nullable=False),
        sa.Column("catch_up_limit", sa.Integer, nullable=False),
        sa.Column("overlap_policy", sa.SmallInteger, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.BigInteger),
        sa.Column("last_fire_at", sa.BigInteger),
        sa.Column("last_job_id", sa.String(32)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_schedules_due", "schedules", ["next_fire_at"])
    op.create_table(
        "schedule_fires",
        sa.Column("schedule", sa.String(128), primary_key=True),
        sa.Column("fire_at", sa.BigInteger, primary_key=True),
        sa.Column("job_id", sa.String(32)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("schedules")
    op.drop_table("throttle_buckets")
    op.drop_table("queues")
    op.drop_index("ix_jobs_finished", "jobs")
    op.drop_index("ix_jobs_leased_queue", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("throttle_key")
