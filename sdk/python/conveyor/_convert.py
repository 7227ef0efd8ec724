"""Protobuf <-> SDK values, in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.models import (
    Attempt,
    EnqueueResult,
    Job,
    JobError,
    JobPage,
    JobSpec,
    JobState,
    MisfirePolicy,
    Outcome,
    OverlapPolicy,
    Queue,
    QueueStats,
    RateLimit,
    RetryPolicy,
    Schedule,
    ServerInfo,
    TaskType,
    TaskTypePage,
)
from conveyor.v1 import coordinator_pb2 as pb


def seconds_of(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def duration(value: timedelta | float) -> Duration:
    """A Duration from a timedelta or seconds (built directly: this is on the hot path)."""
    total = round(seconds_of(value) * 1e9)
    whole, nanos = divmod(abs(total), 1_000_000_000)
    sign = -1 if total < 0 else 1
    return Duration(seconds=sign * whole, nanos=sign * nanos)


def duration_seconds(message: Duration) -> float:
    return message.seconds + message.nanos / 1e9


def timestamp(value: datetime) -> Timestamp:
    if value.tzinfo is None:
        raise ValueError("run_at must be timezone-aware (say datetime.now(UTC) + ...)")
    message = Timestamp()
    message.FromDatetime(value)
    return message


def _time(message: pb.Job | pb.Attempt | pb.Schedule | pb.TaskType, field: str) -> datetime | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        return None
    value: Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def retry_policy_pb(policy: RetryPolicy) -> pb.RetryPolicy:
    message = pb.RetryPolicy(multiplier=policy.multiplier, jitter=policy.jitter)
    if policy.initial_backoff is not None:
        message.initial_backoff.CopyFrom(duration(policy.initial_backoff))
    if policy.max_backoff is not None:
        message.max_backoff.CopyFrom(duration(policy.max_backoff))
    return message


def retry_policy(message: pb.RetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        initial_backoff=message.initial_backoff.ToTimedelta()
        if message.HasField("initial_backoff")
        else None,
        multiplier=message.multiplier if message.HasField("multiplier") else None,
        max_backoff=message.max_backoff.ToTimedelta() if message.HasField("max_backoff") else None,
        jitter=message.jitter if message.HasField("jitter") else None,
    )


def job_spec_pb(spec: JobSpec) -> pb.JobSpec:
    message = pb.JobSpec(
        queue=spec.queue,
        task_type=spec.task_type,
        payload=spec.payload,
        priority=spec.priority,
        max_attempts=spec.max_attempts or 0,
        idempotency_key=spec.idempotency_key or "",
        parent_job_id=spec.parent_job_id or "",
        throttle_key=spec.throttle_key or "",
        task_version=spec.task_version or "",
    )
    if spec.run_at is not None:
        message.run_at.CopyFrom(timestamp(spec.run_at))
    if spec.delay is not None:
        message.delay.CopyFrom(duration(spec.delay))
    if spec.lease_duration is not None:
        message.lease_duration.CopyFrom(duration(spec.lease_duration))
    if spec.retry_policy is not None:
        message.retry_policy.CopyFrom(retry_policy_pb(spec.retry_policy))
    return message


def job_spec(message: pb.JobSpec) -> JobSpec:
    return JobSpec(
        queue=message.queue,
        task_type=message.task_type,
        payload=message.payload,
        priority=message.priority,
        max_attempts=message.max_attempts or None,
        lease_duration=message.lease_duration.ToTimedelta()
        if message.HasField("lease_duration")
        else None,
        retry_policy=retry_policy(message.retry_policy),
        parent_job_id=message.parent_job_id or None,
        throttle_key=message.throttle_key or None,
        task_version=message.task_version or None,
    )


def enqueue_result(message: pb.EnqueueResponse) -> EnqueueResult:
    return EnqueueResult(
        job_id=message.job_id, deduplicated=message.deduplicated, state=JobState(message.state)
    )


def job_error(message: pb.JobError | None) -> JobError | None:
    if message is None or not (message.message or message.type):
        return None
    return JobError(message=message.message, type=message.type, non_retryable=message.non_retryable)


def job(message: pb.Job) -> Job:
    return Job(
        job_id=message.job_id,
        queue=message.queue,
        task_type=message.task_type,
        payload=message.payload,
        state=JobState(message.state),
        priority=message.priority,
        attempt=message.attempt,
        max_attempts=message.max_attempts,
        run_at=_time(message, "run_at"),
        created_at=_time(message, "created_at"),
        finished_at=_time(message, "finished_at"),
        lease_expires_at=_time(message, "lease_expires_at"),
        leased_by=message.leased_by,
        lease_duration=message.lease_duration.ToTimedelta(),
        retry_policy=retry_policy(message.retry_policy),
        result=message.result,
        checkpoint=message.checkpoint,
        last_error=job_error(message.last_error) if message.HasField("last_error") else None,
        idempotency_key=message.idempotency_key,
        parent_job_id=message.parent_job_id,
        throttle_key=message.throttle_key,
        depth=message.depth,
        cancel_requested=message.cancel_requested,
        task_version=message.task_version,
        traceparent=message.traceparent,
        attempts=tuple(
            Attempt(
                attempt=a.attempt,
                worker_id=a.worker_id,
                started_at=_time(a, "started_at"),
                finished_at=_time(a, "finished_at"),
                outcome=Outcome(a.outcome),
                error=job_error(a.error) if a.HasField("error") else None,
            )
            for a in message.attempts
        ),
    )


def job_page(message: pb.ListJobsResponse) -> JobPage:
    return JobPage(jobs=[job(j) for j in message.jobs], next_page_token=message.next_page_token)


def job_error_pb(error: JobError) -> pb.JobError:
    return pb.JobError(message=error.message, type=error.type, non_retryable=error.non_retryable)


def _rate_limit(message: pb.RateLimit) -> RateLimit | None:
    return RateLimit(rate=message.rate, burst=message.burst) if message.rate else None


def queue(message: pb.Queue) -> Queue:
    stats = message.stats
    return Queue(
        name=message.name,
        rate_limit=_rate_limit(message.rate_limit),
        per_key_rate_limit=_rate_limit(message.per_key_rate_limit),
        max_concurrency=message.max_concurrency,
        paused=message.paused,
        retry_policy=retry_policy(message.retry_policy),
        lease_duration=message.lease_duration.ToTimedelta()
        if message.HasField("lease_duration")
        else None,
        max_attempts=message.max_attempts or None,
        retention_succeeded=message.retention.succeeded.ToTimedelta(),
        retention_failed=message.retention.failed.ToTimedelta(),
        retention_cancelled=message.retention.cancelled.ToTimedelta(),
        stats=QueueStats(
            scheduled=stats.scheduled,
            available=stats.available,
            leased=stats.leased,
            succeeded=stats.succeeded,
            failed=stats.failed,
            cancelled=stats.cancelled,
            oldest_available_age=stats.oldest_available_age.ToTimedelta()
            if stats.HasField("oldest_available_age")
            else None,
            dispatch_rate=stats.dispatch_rate,
            held_by_rate_limit=stats.held_by_rate_limit,
            held_by_concurrency_limit=stats.held_by_concurrency_limit,
            held_by_pause=stats.held_by_pause,
            awaiting_compatible_worker=stats.awaiting_compatible_worker,
        ),
        strict_task_types=message.strict_task_types,
    )


def rate_limit_pb(limit: RateLimit | None) -> pb.RateLimit:
    return pb.RateLimit(rate=limit.rate, burst=limit.burst) if limit else pb.RateLimit()


def schedule(message: pb.Schedule) -> Schedule:
    return Schedule(
        name=message.name,
        cron=message.cron,
        timezone=message.timezone,
        job=job_spec(message.job),
        misfire_policy=MisfirePolicy(message.misfire_policy or MisfirePolicy.RUN_ONCE),
        catch_up_limit=message.catch_up_limit,
        overlap_policy=OverlapPolicy(message.overlap_policy or OverlapPolicy.ALLOW),
        paused=message.paused,
        next_fire_at=_time(message, "next_fire_at"),
        last_fire_at=_time(message, "last_fire_at"),
        last_job_id=message.last_job_id,
    )


def task_type(message: pb.TaskType) -> TaskType:
    return TaskType(
        name=message.name,
        version=message.version,
        message_type=message.message_type,
        descriptors=message.descriptors,
        registered_at=_time(message, "registered_at"),
    )


def task_type_page(message: pb.ListTaskTypesResponse) -> TaskTypePage:
    return TaskTypePage(
        task_types=[task_type(t) for t in message.task_types],
        next_page_token=message.next_page_token,
    )


def server_info(message: pb.ServerInfo) -> ServerInfo:
    return ServerInfo(
        server_version=message.server_version,
        max_payload_bytes=message.max_payload_bytes,
        max_result_bytes=message.max_result_bytes,
        max_checkpoint_bytes=message.max_checkpoint_bytes,
        max_jobs_per_lease=message.max_jobs_per_lease,
        max_lease_wait=message.max_lease_wait.ToTimedelta(),
        max_message_bytes=message.max_message_bytes,
        default_max_reply_bytes=message.default_max_reply_bytes,
        max_lease_duration=message.max_lease_duration.ToTimedelta(),
        max_error_message_chars=message.max_error_message_chars,
        max_page_size=message.max_page_size,
        max_jobs_per_batch=message.max_jobs_per_batch,
    )
