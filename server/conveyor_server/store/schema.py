"""Table definitions (SQLAlchemy Core). Alembic migrations create them; keep both in step.

Times are BIGINT microseconds since the Unix epoch, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Numbers of the JobState enum, spelled here so that partial indexes stay readable.
SCHEDULED, AVAILABLE, LEASED = 1, 2, 3
FINISHED = (4, 5, 6)

jobs = sa.Table(
    "jobs",
    metadata,
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
    # The current lease's token; kept after a receipt so that a repeated receipt is recognised,
    # cleared when a lease expires so that a late receipt is refused.
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
    sa.Column("throttle_key", sa.String(256)),
    # The task contract version the payload follows, also split up for routing by version.
    sa.Column("task_version", sa.String(32)),
    sa.Column("version_major", sa.Integer),
    sa.Column("version_minor", sa.Integer),
    sa.Column("version_patch", sa.Integer),
    # The outcome and result of the receipt that settled the current lease (a hash), so that a
    # repeated receipt is told apart from a contradicting one.
    sa.Column("receipt_digest", sa.String(64)),
    # The producer's W3C traceparent (55 characters), handed to every attempt's worker.
    sa.Column("traceparent", sa.String(55)),
    # Leased with confirmation (LeaseRequest.confirm) and not yet confirmed by a heartbeat:
    # when its lease expires the job is handed back, its attempt not counted.
    sa.Column("lease_unconfirmed", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Dispatch order: priority first, then due time, then creation (ids sort by creation).
sa.Index(
    "ix_jobs_dispatch",
    jobs.c.queue,
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    sqlite_where=jobs.c.state == AVAILABLE,
    postgresql_where=jobs.c.state == AVAILABLE,
)
# The same per task type, for workers that declare theirs: their leases seek straight to
# the jobs they may take.
sa.Index(
    "ix_jobs_dispatch_type",
    jobs.c.queue,
    jobs.c.task_type,
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    sqlite_where=jobs.c.state == AVAILABLE,
    postgresql_where=jobs.c.state == AVAILABLE,
)
sa.Index(
    "ix_jobs_scheduled",
    jobs.c.run_at,
    sqlite_where=jobs.c.state == SCHEDULED,
    postgresql_where=jobs.c.state == SCHEDULED,
)
sa.Index(
    "ix_jobs_leased",
    jobs.c.lease_expires_at,
    sqlite_where=jobs.c.state == LEASED,
    postgresql_where=jobs.c.state == LEASED,
)
# Idempotent enqueue is the database's promise, so it holds under concurrency.
sa.Index(
    "uq_jobs_idempotency",
    jobs.c.queue,
    jobs.c.idempotency_key,
    unique=True,
    sqlite_where=jobs.c.idempotency_key.is_not(None),
    postgresql_where=jobs.c.idempotency_key.is_not(None),
)
sa.Index("ix_jobs_queue_id", jobs.c.queue, jobs.c.id)
# A job's children (the dashboard's job page); only jobs that have a parent are in it.
sa.Index(
    "ix_jobs_parent",
    jobs.c.parent_job_id,
    sqlite_where=jobs.c.parent_job_id.is_not(None),
    postgresql_where=jobs.c.parent_job_id.is_not(None),
)
# Counting a queue's leased jobs for its concurrency cap.
sa.Index(
    "ix_jobs_leased_queue",
    jobs.c.queue,
    sqlite_where=jobs.c.state == LEASED,
    postgresql_where=jobs.c.state == LEASED,
)
# The pruner's bounded scans of finished jobs, oldest first.
sa.Index(
    "ix_jobs_finished",
    jobs.c.queue,
    jobs.c.state,
    jobs.c.finished_at,
    sqlite_where=jobs.c.state.in_(FINISHED),
    postgresql_where=jobs.c.state.in_(FINISHED),
)

job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(200), nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("error_message", sa.Text),
    sa.Column("error_type", sa.String(200)),
    sa.Column("error_non_retryable", sa.Boolean),
)

# A queue exists as soon as a job or UpdateQueue names it. NULL settings mean "no default here".
queues = sa.Table(
    "queues",
    metadata,
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
    # The queue-wide token bucket, as of tokens_at.
    sa.Column("tokens", sa.Float),
    sa.Column("tokens_at", sa.BigInteger),
    # Dispatch counts in fixed one-minute windows, for the dispatch rate in QueueStats.
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("window_count", sa.Integer, nullable=False),
    sa.Column("previous_window_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("strict_task_types", sa.Boolean, nullable=False, server_default=sa.false()),
    # A push queue's target: a serialized conveyor.v1.PushTarget (core/push.py); NULL: pull.
    sa.Column("push_target", sa.LargeBinary),
)

# How many jobs each queue holds per task type and state, kept exact by the transitions
# themselves (store/counts.py): queue statistics cost the same at any queue depth.
queue_counts = sa.Table(
    "queue_counts",
    metadata,
    sa.Column("queue", sa.String(128), primary_key=True),
    sa.Column("task_type", sa.String(128), primary_key=True),
    sa.Column("state", sa.SmallInteger, primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

# One token bucket per (queue, throttle_key); a missing row is a full bucket.
throttle_buckets = sa.Table(
    "throttle_buckets",
    metadata,
    sa.Column("queue", sa.String(128), primary_key=True),
    sa.Column("throttle_key", sa.String(256), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    # The JobSpec template as serialized protobuf (conveyor.v1.JobSpec): the wire contract is
    # its schema, so no field added to JobSpec later can be lost. Opaque to the store.
    sa.Column("job_spec", sa.LargeBinary, nullable=False),
    sa.Column("misfire_policy", sa.SmallInteger, nullable=False),
    sa.Column("catch_up_limit", sa.Integer, nullable=False),
    sa.Column("overlap_policy", sa.SmallInteger, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("next_fire_at", sa.BigInteger),
    sa.Column("last_fire_at", sa.BigInteger),
    sa.Column("last_job_id", sa.String(32)),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
sa.Index("ix_schedules_due", schedules.c.next_fire_at)

# Each fire is enqueued at most once: the primary key refuses a second one.
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("schedule", sa.String(128), primary_key=True),
    sa.Column("fire_at", sa.BigInteger, primary_key=True),
    sa.Column("job_id", sa.String(32)),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Registered task contract versions; a registration never changes.
task_types = sa.Table(
    "task_types",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("major", sa.Integer, primary_key=True),
    sa.Column("minor", sa.Integer, primary_key=True),
    sa.Column("patch", sa.Integer, primary_key=True),
    sa.Column("message_type", sa.String(512), nullable=False),
    # A serialized FileDescriptorSet (canonical: files sorted by name, deterministic).
    sa.Column("descriptors", sa.LargeBinary, nullable=False),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
)

# What each worker said it implements when it last leased from a queue, so that queue stats
# can count jobs no live worker may take. task_type "*": any job. major -1 (and no minor,
# patch): every version of the type; else the highest minor.patch declared in that major.
worker_task_types = sa.Table(
    "worker_task_types",
    metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("queue", sa.String(128), primary_key=True),
    sa.Column("task_type", sa.String(128), primary_key=True),
    sa.Column("major", sa.Integer, primary_key=True),
    sa.Column("minor", sa.Integer),
    sa.Column("patch", sa.Integer),
    sa.Column("seen_at", sa.BigInteger, nullable=False),
)
sa.Index("ix_worker_task_types_queue", worker_task_types.c.queue, worker_task_types.c.seen_at)

# Who runs each maintenance service (reaper, cron, pruner) when several coordinators share
# one database: a lease held until expires_at and renewed by its holder; anyone may take it
# once it has expired (maintenance/leader.py).
leaders = sa.Table(
    "leaders",
    metadata,
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

# API tokens (store/tokens.py). Only the SHA-256 of a token is kept; `roles` and `queues` are
# comma-separated (role names and queue globs never contain commas). Revoking deletes the row.
auth_tokens = sa.Table(
    "auth_tokens",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.Column("roles", sa.String(64), nullable=False),
    sa.Column("queues", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
