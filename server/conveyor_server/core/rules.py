"""Decisions the stores apply, as pure functions: every store (SQLite, PostgreSQL) reads what
it needs, asks these where a job or a schedule goes, and writes the answer. Nothing here
touches storage; the SQL lives in store/."""

from __future__ import annotations

import enum

from conveyor_server.core.model import JobState, Micros, NewJob, Version
from conveyor_server.core.schedules import OverlapPolicy
from conveyor_server.errors import ConveyorError, FailedPrecondition, InvalidArgument, NotFound

# States a job can be cancelled from at once; a LEASED job is asked to stop instead.
CANCELLABLE_AT_ONCE = (JobState.SCHEDULED, JobState.AVAILABLE)
# States RetryJob starts a job again from.
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


class CancelStep(enum.Enum):
    FINISH = "finish"  # SCHEDULED or AVAILABLE: the job becomes CANCELLED now
    REQUEST = "request"  # LEASED: the worker hears of it in its next heartbeat
    NOTHING = "nothing"  # already CANCELLED: cancelling again changes nothing


def cancel_step(job_id: str, state: JobState) -> CancelStep:
    """What CancelJob does to a job in `state`; FailedPrecondition for a finished one."""
    if state in CANCELLABLE_AT_ONCE:
        return CancelStep.FINISH
    if state == JobState.LEASED:
        return CancelStep.REQUEST
    if state == JobState.CANCELLED:
        return CancelStep.NOTHING
    raise FailedPrecondition(
        f"job {job_id!r} already finished as {state.name}; there is nothing to cancel"
    )


def check_retryable(job_id: str, state: JobState) -> None:
    """RetryJob starts only FAILED or CANCELLED jobs again."""
    if state not in RETRYABLE:
        raise FailedPrecondition(
            f"job {job_id!r} is {state.name}; only FAILED or CANCELLED jobs can be retried"
        )


def no_such_parent(job_id: str) -> NotFound:
    """A parent that does not exist, or (core/scoped.py) is outside the caller's scope."""
    return NotFound(f"parent_job_id {job_id!r}: no such job")


def child_depth(job: NewJob, parent_depth: int | None, max_depth: int) -> int | ConveyorError:
    """A job's depth in its parent_job_id chain (0 without a parent), or why it is refused:
    the parent does not exist (parent_depth None), or the chain would pass max_depth."""
    if not job.parent_job_id:
        return 0
    if parent_depth is None:
        return no_such_parent(job.parent_job_id)
    if parent_depth + 1 > max_depth:
        return FailedPrecondition(
            f"job depth would be {parent_depth + 1}, over the maximum of {max_depth}: "
            "parent_job_id chains this deep usually mean a job that enqueues itself without "
            "end (raise --max-depth if intended)"
        )
    return parent_depth + 1


def strict_refusal(
    job: NewJob, strict: bool, registered: set[tuple[str, Version]]
) -> ConveyorError | None:
    """In a strict queue every job names a registered task type version; None when `job` may
    be stored. `registered` holds the (name, version) pairs known to be registered."""
    if not strict:
        return None
    if job.task_version is None:
        return InvalidArgument(
            f"job.task_version is required: queue {job.queue!r} is strict, so every job "
            "names a registered task type version"
        )
    if (job.task_type, job.task_version) not in registered:
        return FailedPrecondition(
            f"task type {job.task_type} {job.task_version} is not registered and queue "
            f"{job.queue!r} is strict: RegisterTaskType first"
        )
    return None


def previous_run_blocks(policy: OverlapPolicy, last_job_state: JobState | None) -> bool:
    """Whether a schedule's fire is skipped: under SKIP, while its last job is unfinished.
    `last_job_state` is None when there is no last job (or it was pruned)."""
    if policy != OverlapPolicy.SKIP or last_job_state is None:
        return False
    return not last_job_state.is_terminal


def retention_cutoff(now: Micros, retention: Micros) -> Micros | None:
    """Jobs that finished before the returned time are past retention; None when nothing can
    have finished that long ago."""
    if retention >= now:
        return None
    return now - retention
