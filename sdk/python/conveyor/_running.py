"""The worker's record of one job it is running, shared by its phases."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from conveyor.context import JobContext
from conveyor.v1 import coordinator_pb2 as pb

# A job leased without a lease_duration (an older coordinator) is heartbeated as if 30 s.
DEFAULT_LEASE_SECONDS = 30.0


def job_context(
    job: pb.LeasedJob, *, on_heartbeat_request: Callable[[], None] | None = None
) -> JobContext:
    """What the handler of a leased job sees: the one conversion the pull worker and the
    push app share. Empty bytes and strings on the wire mean "none" (docs/protocol.md)."""
    return JobContext(
        job_id=job.job_id,
        queue=job.queue,
        task_type=job.task_type,
        task_version=job.task_version,
        payload=job.payload,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        checkpoint=job.checkpoint or None,
        parent_job_id=job.parent_job_id or None,
        on_heartbeat_request=on_heartbeat_request,
    )


class StopReason(enum.Enum):
    """Why the worker cut a handler short; decides which receipt (if any) it sends."""

    CANCEL_REQUESTED = "cancel_requested"  # a heartbeat reply said so: report, job ends CANCELLED
    LEASE_LOST = "lease_lost"  # someone else owns the job now: send nothing
    SHUTDOWN = "shutdown"  # the grace period ran out: hand the job back (RELEASE)


class RunningJob:
    __slots__ = ("context", "interval", "job", "next_heartbeat", "stop_reason", "task")

    def __init__(self, job: pb.LeasedJob, context: JobContext, interval: float, now: float) -> None:
        self.job = job
        self.context = context
        # Seconds between heartbeats: a third of the lease, so two can be lost in a row.
        self.interval = interval
        self.next_heartbeat = now + interval
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: StopReason | None = None

    def stop(self, reason: StopReason, *, cancel_task: bool = True) -> None:
        """Tells the handler to stop (ctx.cancelled) and, if asked, cancels its task. The
        first reason wins: a job cancelled and then shut down still reports CANCELLED."""
        if self.stop_reason is None or reason is StopReason.LEASE_LOST:
            self.stop_reason = reason
        self.context._cancel()
        if cancel_task and self.task is not None:
            self.task.cancel()


def heartbeat_interval(job: pb.LeasedJob, fraction: float) -> float:
    if job.HasField("lease_duration"):
        lease = job.lease_duration.seconds + job.lease_duration.nanos / 1e9
    else:
        lease = DEFAULT_LEASE_SECONDS
    return max(lease * fraction, 0.05)
