"""The SDK's values: plain dataclasses, so callers never handle protobufs."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.descriptor_pb2 import FileDescriptorSet


class JobState(enum.IntEnum):
    UNSPECIFIED = 0
    SCHEDULED = 1
    AVAILABLE = 2
    LEASED = 3
    SUCCEEDED = 4
    FAILED = 5  # the dead-letter state
    CANCELLED = 6

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Outcome(enum.IntEnum):
    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    RELEASE = 3


@dataclass(frozen=True)
class RetryPolicy:
    """How long a failed job waits before its next attempt: after attempt n,
    min(max_backoff, initial_backoff * multiplier ** (n - 1)), spread by +/- jitter.
    None means the queue's or the coordinator's default (1 s, x2, 1 h, 0.2)."""

    initial_backoff: timedelta | None = None
    multiplier: float | None = None
    max_backoff: timedelta | None = None
    jitter: float | None = None

    def __post_init__(self) -> None:
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if value is not None and value < timedelta(0):
                raise ValueError(f"RetryPolicy.{name} must not be negative, got {value}")
        if self.multiplier is not None and self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be at least 1, got {self.multiplier}")
        if self.jitter is not None and not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter}")


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue (for `Client.enqueue_batch`). Durations are timedeltas or seconds;
    None means the queue's or the coordinator's default. `run_at` must be timezone-aware."""

    queue: str
    task_type: str
    payload: bytes = b""
    run_at: datetime | None = None
    delay: timedelta | float | None = None
    priority: int = 0
    max_attempts: int | None = None
    lease_duration: timedelta | float | None = None
    retry_policy: RetryPolicy | None = None
    idempotency_key: str | None = None
    parent_job_id: str | None = None
    throttle_key: str | None = None
    # The task contract's version (MAJOR.MINOR.PATCH) the payload follows; None = unversioned.
    task_version: str | None = None


@dataclass(frozen=True)
class EnqueueResult:
    job_id: str
    deduplicated: bool
    state: JobState


@dataclass(frozen=True)
class JobError:
    """Why an attempt failed: the exception's message and class name, as the worker sent."""

    message: str
    type: str = ""
    non_retryable: bool = False


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job. `outcome` is UNSPECIFIED when its lease expired unreported."""

    attempt: int
    worker_id: str
    started_at: datetime | None
    finished_at: datetime | None
    outcome: Outcome
    error: JobError | None


@dataclass(frozen=True)
class Job:
    """A job as the coordinator holds it, with its attempt history."""

    job_id: str
    queue: str
    task_type: str
    payload: bytes
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime | None
    created_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    leased_by: str
    lease_duration: timedelta
    retry_policy: RetryPolicy
    result: bytes
    checkpoint: bytes
    last_error: JobError | None
    idempotency_key: str
    parent_job_id: str
    throttle_key: str
    depth: int
    cancel_requested: bool
    attempts: tuple[Attempt, ...] = ()
    task_version: str = ""
    # The producer's W3C trace context, if it sent one (see conveyor[otel]).
    traceparent: str = ""


@dataclass(frozen=True)
class JobPage:
    """One page of `Client.list_jobs`; pass `next_page_token` back for the next ("" = last)."""

    jobs: list[Job]
    next_page_token: str


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `burst` jobs at once, refilled at `rate` per second."""

    rate: float
    burst: int


@dataclass(frozen=True)
class QueueStats:
    scheduled: int
    available: int
    leased: int
    succeeded: int
    failed: int
    cancelled: int
    oldest_available_age: timedelta | None
    dispatch_rate: float
    held_by_rate_limit: bool
    held_by_concurrency_limit: bool
    held_by_pause: bool
    # Available jobs no recently seen worker of this queue declared a compatible version for.
    awaiting_compatible_worker: int = 0


@dataclass(frozen=True)
class Queue:
    name: str
    rate_limit: RateLimit | None
    per_key_rate_limit: RateLimit | None
    max_concurrency: int
    paused: bool
    retry_policy: RetryPolicy
    lease_duration: timedelta | None
    max_attempts: int | None
    retention_succeeded: timedelta
    retention_failed: timedelta
    retention_cancelled: timedelta
    stats: QueueStats
    # Every job must name a registered task type version, so every payload is checked.
    strict_task_types: bool = False


class MisfirePolicy(enum.IntEnum):
    SKIP = 1
    RUN_ONCE = 2
    CATCH_UP = 3


class OverlapPolicy(enum.IntEnum):
    ALLOW = 1
    SKIP = 2


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    job: JobSpec
    misfire_policy: MisfirePolicy
    catch_up_limit: int
    overlap_policy: OverlapPolicy
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str


@dataclass(frozen=True)
class TaskType:
    """One registered version of a task contract: the payload message's full name and the
    descriptors of its file and every file that file imports (dependencies first)."""

    name: str
    version: str
    message_type: str
    descriptors: FileDescriptorSet
    registered_at: datetime | None


@dataclass(frozen=True)
class TaskTypePage:
    """One page of `Client.list_task_types`; pass `next_page_token` back ("" = last)."""

    task_types: list[TaskType]
    next_page_token: str


@dataclass(frozen=True)
class ServerInfo:
    """A coordinator's limits and version (`Client.server_info`): size payloads, results and
    checkpoints, and the channel's receive limit, from these."""

    server_version: str
    max_payload_bytes: int
    max_result_bytes: int
    max_checkpoint_bytes: int
    max_jobs_per_lease: int
    max_lease_wait: timedelta
    max_message_bytes: int
    default_max_reply_bytes: int
    max_lease_duration: timedelta
    max_error_message_chars: int
    max_page_size: int
    max_jobs_per_batch: int
