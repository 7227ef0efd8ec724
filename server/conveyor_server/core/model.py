"""Domain values of the job lifecycle. Times are integer microseconds since the Unix epoch;
durations are integer microseconds. Enum numbers equal the wire enum numbers."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.errors import InvalidArgument, shown

if TYPE_CHECKING:
    from conveyor_server.core.push import PushConfig

Micros = int

DEFAULT_MAX_ATTEMPTS = 20
DEFAULT_LEASE_DURATION: Micros = 30 * MICROS_PER_SECOND


class JobState(enum.IntEnum):
    SCHEDULED = 1
    AVAILABLE = 2
    LEASED = 3
    SUCCEEDED = 4
    FAILED = 5  # the dead-letter state
    CANCELLED = 6

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Outcome(enum.IntEnum):
    # UNSPECIFIED (0) is only ever stored in history, for a lease that expired.
    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    RELEASE = 3


@dataclass(frozen=True, slots=True)
class JobError:
    message: str
    type: str = ""
    non_retryable: bool = False


LEASE_EXPIRED_ERROR = JobError(message="lease expired", type="LeaseExpired")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff: Micros = 1 * MICROS_PER_SECOND
    multiplier: float = 2.0
    max_backoff: Micros = 3600 * MICROS_PER_SECOND
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class RetryOverrides:
    """A retry policy as a job or a queue states it: None means 'not said here'."""

    initial_backoff: Micros | None = None
    multiplier: float | None = None
    max_backoff: Micros | None = None
    jitter: float | None = None


@dataclass(frozen=True, slots=True)
class JobSettings:
    """Settings a job may state and a queue may default; None means 'not said here'."""

    max_attempts: int | None = None
    lease_duration: Micros | None = None
    retry: RetryOverrides = RetryOverrides()


NO_SETTINGS = JobSettings()


@dataclass(frozen=True, slots=True)
class ResolvedSettings:
    max_attempts: int
    lease_duration: Micros
    retry_policy: RetryPolicy


@functools.lru_cache(maxsize=4096)
def resolve_settings(job: JobSettings, queue: JobSettings) -> ResolvedSettings:
    """The job's own value wins, then the queue's default, then the built-in default."""
    builtin = RetryPolicy()

    def pick(*values: Any) -> Any:
        return next(v for v in values if v is not None)

    initial = pick(job.retry.initial_backoff, queue.retry.initial_backoff, builtin.initial_backoff)
    maximum = pick(job.retry.max_backoff, queue.retry.max_backoff, builtin.max_backoff)
    return ResolvedSettings(
        max_attempts=pick(job.max_attempts, queue.max_attempts, DEFAULT_MAX_ATTEMPTS),
        lease_duration=pick(job.lease_duration, queue.lease_duration, DEFAULT_LEASE_DURATION),
        retry_policy=RetryPolicy(
            initial_backoff=initial,
            multiplier=pick(job.retry.multiplier, queue.retry.multiplier, builtin.multiplier),
            # A long initial backoff from one level is not cut short by another level's max.
            max_backoff=max(maximum, initial),
            jitter=pick(job.retry.jitter, queue.retry.jitter, builtin.jitter),
        ),
    )


_SEMVER = re.compile(r"(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})")


@dataclass(frozen=True, order=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str, field: str) -> Version:
        match = _SEMVER.fullmatch(text)
        if match is None:
            raise InvalidArgument(
                f"{field} must be a semantic version MAJOR.MINOR.PATCH such as 1.2.0 "
                f"(no pre-release or build suffix), not {shown(text)}"
            )
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def runs(self, job: Version) -> bool:
        """May a worker implementing this version run a job of version `job`?"""
        return self.major == job.major and (self.minor, self.patch) >= (job.minor, job.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, slots=True)
class TaskTypeRef:
    """A task type a worker implements; version None: every version of it."""

    name: str
    version: Version | None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated JobSpec, ready to store; the store resolves its settings against the
    queue's defaults in the same transaction."""

    job_id: str
    queue: str
    task_type: str
    payload: bytes
    run_at: Micros  # when it becomes due
    delay: Micros
    priority: int
    settings: JobSettings
    idempotency_key: str | None
    parent_job_id: str | None
    throttle_key: str | None
    created_at: Micros
    task_version: Version | None = None
    # The producer's W3C traceparent, validated by the API layer.
    traceparent: str | None = None

    def initial_state(self) -> JobState:
        return JobState.SCHEDULED if self.run_at > self.created_at else JobState.AVAILABLE


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    job_id: str
    deduplicated: bool
    state: JobState
    queue: str
    task_type: str
    run_at: Micros


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    worker_id: str
    started_at: Micros
    finished_at: Micros
    outcome: Outcome
    error: JobError | None


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    queue: str
    task_type: str
    payload: bytes
    state: JobState
    run_at: Micros
    delay: Micros
    priority: int
    max_attempts: int
    lease_duration: Micros
    retry_policy: RetryPolicy
    idempotency_key: str | None
    parent_job_id: str | None
    depth: int
    attempt: int
    checkpoint: bytes | None
    result: bytes | None
    last_error: JobError | None
    created_at: Micros
    finished_at: Micros | None
    lease_expires_at: Micros | None
    leased_by: str | None
    cancel_requested: bool
    throttle_key: str | None = None
    attempts: tuple[Attempt, ...] = field(default=())
    task_version: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class LeasedJob:
    job_id: str
    lease_token: str
    queue: str
    task_type: str
    payload: bytes
    attempt: int
    max_attempts: int
    lease_expires_at: Micros
    lease_duration: Micros
    checkpoint: bytes | None
    created_at: Micros
    parent_job_id: str | None
    task_version: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class ReplyLimit:
    """How large a reply may grow, in bytes: `budget` is what the caller can receive; one item
    is sent even when larger than that, as long as it fits `hard_limit` (what this server can
    send at all)."""

    budget: int
    hard_limit: int


# Upper bounds of what one item adds to a reply besides its variable-length bytes, so that a
# reply is cut before it passes its limit (tests/unit checks them against the real messages):
# a LeasedJob (ids, names up to 128 characters, a version, three times, tags and lengths)...
LEASED_JOB_OVERHEAD = 704
# ...and a listed Job (also keys up to 256 characters, a worker id, an error type, a policy).
LISTED_JOB_OVERHEAD = 2048


def fit_in_reply(sizes: Sequence[int], limit: ReplyLimit) -> tuple[list[int], bool]:
    """The indexes of the items (in order) that fit in one reply, and whether the budget is
    reached (no later item can join). Stops at the first item that would pass the budget, so
    order is kept; the first item that fits the hard limit always goes, so that a small budget
    cannot starve a large job. An item larger than the hard limit can never be sent and is
    passed over."""
    kept: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if size > limit.hard_limit:
            continue
        if kept and total + size > limit.budget:
            return kept, True
        kept.append(index)
        total += size
    return kept, False


@dataclass(frozen=True, slots=True)
class LeaseParams:
    worker_id: str
    queues: tuple[str, ...]
    max_jobs: int
    now: Micros
    # Empty: the worker takes any job.
    task_types: tuple[TaskTypeRef, ...] = ()
    # None: no limit on the reply's size.
    reply_limit: ReplyLimit | None = None
    # Lease confirmation: the jobs are held unconfirmed for this long (at most their own
    # lease_duration); a window that passes without a heartbeat or receipt hands them back.
    # None: an ordinary lease, for the job's full lease_duration.
    confirm_within: Micros | None = None


def first_lease(lease_duration: Micros, confirm_within: Micros | None) -> Micros:
    """How long a lease runs from its claim: the job's lease_duration, or the confirmation
    window when one was asked for and is shorter."""
    if confirm_within is None:
        return lease_duration
    return min(lease_duration, confirm_within)


@dataclass(frozen=True, slots=True)
class HeartbeatParams:
    job_id: str
    lease_token: str
    extend_by: Micros | None  # None: the job's own lease_duration
    checkpoint: bytes | None  # None: keep the stored one
    # Read the stored checkpoint back (HeartbeatRequest.return_checkpoint). Off by default,
    # so that the hot heartbeat path never reads the checkpoint column.
    return_checkpoint: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    lease_expires_at: Micros
    cancel_requested: bool
    # The job's checkpoint after this heartbeat, opened; only when return_checkpoint asked.
    checkpoint: bytes | None = None


@dataclass(frozen=True, slots=True)
class ReceiptParams:
    job_id: str
    lease_token: str
    outcome: Outcome
    result: bytes | None
    error: JobError | None
    retry_after: Micros | None


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """What a fencing check reads from a leased job before a transition is decided."""

    job_id: str
    queue: str
    task_type: str
    attempt: int
    max_attempts: int
    retry_policy: RetryPolicy
    leased_by: str
    leased_at: Micros
    cancel_requested: bool
    # Leased with confirmation, and neither heartbeat nor receipt has confirmed it yet.
    unconfirmed: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """Where a leased job goes next, decided by core/lifecycle.py, applied by the store."""

    state: JobState
    run_at: Micros | None  # the next due time for SCHEDULED/AVAILABLE
    attempt_delta: int  # -1 when the attempt does not count (release)
    result: bytes | None
    error: JobError | None
    finished_at: Micros | None
    history_outcome: Outcome


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """A transition that happened, for notifications and logs."""

    job_id: str
    queue: str
    task_type: str
    attempt: int
    worker_id: str
    state: JobState
    run_at: Micros | None
    replayed: bool = False  # a repeated receipt: nothing changed
    unconfirmed: bool = False  # a lease handed back because nobody confirmed it


@dataclass(frozen=True, slots=True)
class ListJobsParams:
    queue: str | None
    state: JobState | None
    page_size: int
    after_job_id: str | None  # paging cursor: jobs strictly older than this id
    # False (the basic view): without payload, result and checkpoint.
    full: bool = False
    # None: no limit on the page's size in bytes.
    reply_limit: ReplyLimit | None = None
    # Only jobs of this namespace's queues (core/namespaces.py); None: every namespace.
    namespace: str | None = None
    # Only the job holding this idempotency key (in `queue`, or in any queue), or only the
    # children of this job; each is an index seek, whatever the number of jobs.
    idempotency_key: str | None = None
    parent_job_id: str | None = None


def listed_job_size(job: Job) -> int:
    """An upper bound of the job's size in a list reply (its attempts are never listed)."""
    error = job.last_error
    return (
        LISTED_JOB_OVERHEAD
        + len(job.payload or b"")
        + len(job.result or b"")
        + len(job.checkpoint or b"")
        + (len(error.message.encode()) if error else 0)
    )


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    # True when the page is full or was cut short by its size: ask for the next one.
    more: bool


@dataclass(frozen=True, slots=True)
class NameFilter:
    """Which stored names a listing may return (a token's queue globs, core/namespaces.py):
    those that start with one of `prefixes`, which the store can test in SQL to skip most
    other rows, and that `admits` accepts, the exact test, which the store applies in Python
    before it reads anything more of a row. The globs' meaning (fnmatch) is written once, in
    `admits`; SQL only narrows, so the two databases cannot disagree with it."""

    prefixes: tuple[str, ...]
    admits: Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class DueTimes:
    next_scheduled_at: Micros | None
    next_lease_expiry_at: Micros | None


@dataclass(frozen=True, slots=True)
class JobSpecInput:
    """A JobSpec as the API layer validated it; times still relative to 'now'."""

    queue: str
    task_type: str
    payload: bytes
    run_at: Micros | None
    delay: Micros
    priority: int
    settings: JobSettings
    idempotency_key: str | None
    parent_job_id: str | None
    throttle_key: str | None = None
    task_version: Version | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float  # tokens per second
    burst: int  # bucket size; a new bucket starts full


DAY: Micros = 24 * 3600 * MICROS_PER_SECOND


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished jobs are kept; None means the built-in default."""

    succeeded: Micros | None = None
    failed: Micros | None = None
    cancelled: Micros | None = None

    def for_state(self, state: JobState) -> Micros:
        if state == JobState.SUCCEEDED:
            return self.succeeded if self.succeeded is not None else DAY
        if state == JobState.FAILED:
            return self.failed if self.failed is not None else 7 * DAY
        return self.cancelled if self.cancelled is not None else DAY


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    paused: bool = False
    rate_limit: RateLimit | None = None
    per_key_rate_limit: RateLimit | None = None
    max_concurrency: int = 0  # 0: no cap
    defaults: JobSettings = NO_SETTINGS
    retention: Retention = Retention()
    # Every job must name a registered task type version.
    strict_task_types: bool = False
    # Set: the coordinator POSTs the queue's jobs to an HTTP endpoint (core/push.py).
    push: PushConfig | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    counts: dict[JobState, int]
    oldest_available_age: Micros | None
    dispatch_rate: float
    held_by_rate_limit: bool
    held_by_concurrency_limit: bool
    held_by_pause: bool
    awaiting_compatible_worker: int = 0


# The statistics of a queue that no job has named yet.
EMPTY_QUEUE_STATS = QueueStats(
    counts={},
    oldest_available_age=None,
    dispatch_rate=0.0,
    held_by_rate_limit=False,
    held_by_concurrency_limit=False,
    held_by_pause=False,
)


@dataclass(frozen=True, slots=True)
class Queue:
    config: QueueConfig
    stats: QueueStats


@dataclass(frozen=True, slots=True)
class LeaseBatch:
    jobs: list[LeasedJob]
    # When a rate limit next lets more work through, if one held work back.
    retry_at: Micros | None = None
    # Queues whose own bucket holds no whole token once this claim took its share, with the
    # time of their next token: nothing there can be leased before it, whatever else happens
    # in them, short of a change to their limits.
    dry_until: dict[str, Micros] = field(default_factory=dict)
    # Jobs that were due and allowed but did not fit the reply's size limit: still AVAILABLE.
    left_behind: bool = False
