"""Proto <-> domain conversion, in one place. Times on the wire are Timestamps and Durations;
inside they are integer microseconds."""

from __future__ import annotations

from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf import descriptor_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor_server.core.contracts import TaskType
from conveyor_server.core.model import (
    Attempt,
    EnqueueResult,
    HeartbeatResult,
    Job,
    JobError,
    JobState,
    LeasedJob,
    Micros,
    Queue,
    RateLimit,
    RetryOverrides,
    RetryPolicy,
    TransitionResult,
)
from conveyor_server.core.push import PushConfig
from conveyor_server.core.schedules import Schedule

# Attempts a Job reply carries: the newest ones. After 4,300 failed attempts a full history no
# longer fitted a reply; 100 attempts with 16 KiB error messages stay under 2 MiB.
MAX_ATTEMPTS_SHOWN = 100


def timestamp(micros: Micros) -> Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def duration(micros: Micros) -> Duration:
    seconds, rest = divmod(abs(micros), 1_000_000)
    sign = -1 if micros < 0 else 1
    return Duration(seconds=sign * seconds, nanos=sign * rest * 1000)


def micros_of_timestamp(ts: Timestamp) -> Micros:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def micros_of_duration(d: Duration) -> Micros:
    return d.seconds * 1_000_000 + int(d.nanos / 1000)


def enqueue_response(result: EnqueueResult) -> pb.EnqueueResponse:
    return pb.EnqueueResponse(
        job_id=result.job_id,
        deduplicated=result.deduplicated,
        state=int(result.state),  # type: ignore[arg-type]
    )


def job_error(error: JobError | None) -> pb.JobError | None:
    if error is None:
        return None
    return pb.JobError(message=error.message, type=error.type, non_retryable=error.non_retryable)


def retry_policy(policy: RetryPolicy) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        initial_backoff=duration(policy.initial_backoff),
        multiplier=policy.multiplier,
        max_backoff=duration(policy.max_backoff),
        jitter=policy.jitter,
    )


def attempt(item: Attempt) -> pb.Attempt:
    return pb.Attempt(
        attempt=item.attempt,
        worker_id=item.worker_id,
        started_at=timestamp(item.started_at),
        finished_at=timestamp(item.finished_at),
        outcome=int(item.outcome),  # type: ignore[arg-type]
        error=job_error(item.error),
    )


def job(item: Job) -> pb.Job:
    message = pb.Job(
        job_id=item.job_id,
        queue=item.queue,
        task_type=item.task_type,
        payload=item.payload,
        run_at=timestamp(item.run_at),
        delay=duration(item.delay),
        priority=item.priority,
        max_attempts=item.max_attempts,
        lease_duration=duration(item.lease_duration),
        retry_policy=retry_policy(item.retry_policy),
        idempotency_key=item.idempotency_key or "",
        parent_job_id=item.parent_job_id or "",
        attempt=item.attempt,
        checkpoint=item.checkpoint or b"",
        state=int(item.state),  # type: ignore[arg-type]
        result=item.result or b"",
        last_error=job_error(item.last_error),
        attempts=[attempt(a) for a in item.attempts[-MAX_ATTEMPTS_SHOWN:]],
        created_at=timestamp(item.created_at),
        leased_by=item.leased_by or "",
        depth=item.depth,
        cancel_requested=item.cancel_requested,
        throttle_key=item.throttle_key or "",
        task_version=item.task_version,
        traceparent=item.traceparent,
    )
    if item.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(item.finished_at))
    if item.lease_expires_at is not None:
        message.lease_expires_at.CopyFrom(timestamp(item.lease_expires_at))
    return message


def leased_job(item: LeasedJob) -> pb.LeasedJob:
    return pb.LeasedJob(
        job_id=item.job_id,
        lease_token=item.lease_token,
        queue=item.queue,
        task_type=item.task_type,
        payload=item.payload,
        attempt=item.attempt,
        max_attempts=item.max_attempts,
        lease_expires_at=timestamp(item.lease_expires_at),
        lease_duration=duration(item.lease_duration),
        checkpoint=item.checkpoint or b"",
        created_at=timestamp(item.created_at),
        parent_job_id=item.parent_job_id or "",
        task_version=item.task_version,
        traceparent=item.traceparent,
    )


def heartbeat_response(result: HeartbeatResult) -> pb.HeartbeatResponse:
    response = pb.HeartbeatResponse(
        lease_expires_at=timestamp(result.lease_expires_at),
        cancel_requested=result.cancel_requested,
    )
    if result.checkpoint is not None:
        response.checkpoint = result.checkpoint
    return response


def receipt_response(result: TransitionResult) -> pb.ReceiptResponse:
    response = pb.ReceiptResponse(state=int(result.state))  # type: ignore[arg-type]
    if result.run_at is not None:
        response.next_run_at.CopyFrom(timestamp(result.run_at))
    return response


def _retry_overrides(retry: RetryOverrides) -> pb.RetryPolicy:
    message = pb.RetryPolicy(multiplier=retry.multiplier, jitter=retry.jitter)
    if retry.initial_backoff is not None:
        message.initial_backoff.CopyFrom(duration(retry.initial_backoff))
    if retry.max_backoff is not None:
        message.max_backoff.CopyFrom(duration(retry.max_backoff))
    return message


def schedule(item: Schedule) -> pb.Schedule:
    spec = item.spec
    message = pb.Schedule(
        name=spec.name,
        cron=spec.cron,
        timezone=spec.timezone,
        job=pb.JobSpec.FromString(spec.job_spec),
        misfire_policy=int(spec.misfire_policy),  # type: ignore[arg-type]
        catch_up_limit=spec.catch_up_limit,
        overlap_policy=int(spec.overlap_policy),  # type: ignore[arg-type]
        paused=spec.paused,
        last_job_id=item.last_job_id or "",
    )
    if item.next_fire_at is not None:
        message.next_fire_at.CopyFrom(timestamp(item.next_fire_at))
    if item.last_fire_at is not None:
        message.last_fire_at.CopyFrom(timestamp(item.last_fire_at))
    return message


def _rate_limit(limit: RateLimit | None) -> pb.RateLimit | None:
    return pb.RateLimit(rate=limit.rate, burst=limit.burst) if limit else None


def queue(item: Queue) -> pb.Queue:
    config, stats = item.config, item.stats
    defaults = config.defaults
    retention = config.retention
    message = pb.Queue(
        name=config.name,
        rate_limit=_rate_limit(config.rate_limit),
        per_key_rate_limit=_rate_limit(config.per_key_rate_limit),
        max_concurrency=config.max_concurrency,
        paused=config.paused,
        retry_policy=_retry_overrides(defaults.retry),
        max_attempts=defaults.max_attempts or 0,
        retention=pb.RetentionPolicy(
            succeeded=duration(retention.for_state(JobState.SUCCEEDED)),
            failed=duration(retention.for_state(JobState.FAILED)),
            cancelled=duration(retention.for_state(JobState.CANCELLED)),
        ),
        stats=pb.QueueStats(
            scheduled=stats.counts.get(JobState.SCHEDULED, 0),
            available=stats.counts.get(JobState.AVAILABLE, 0),
            leased=stats.counts.get(JobState.LEASED, 0),
            succeeded=stats.counts.get(JobState.SUCCEEDED, 0),
            failed=stats.counts.get(JobState.FAILED, 0),
            cancelled=stats.counts.get(JobState.CANCELLED, 0),
            dispatch_rate=stats.dispatch_rate,
            held_by_rate_limit=stats.held_by_rate_limit,
            held_by_concurrency_limit=stats.held_by_concurrency_limit,
            held_by_pause=stats.held_by_pause,
            awaiting_compatible_worker=stats.awaiting_compatible_worker,
        ),
        strict_task_types=config.strict_task_types,
    )
    if config.push is not None:
        message.push.CopyFrom(push_target(config.push))
    if defaults.lease_duration is not None:
        message.lease_duration.CopyFrom(duration(defaults.lease_duration))
    if stats.oldest_available_age is not None:
        message.stats.oldest_available_age.CopyFrom(duration(stats.oldest_available_age))
    return message


def push_target(config: PushConfig) -> pb.PushTarget:
    """The target as GetQueue shows it: the secret is write-only, only its presence shows."""
    return pb.PushTarget(
        url=config.url,
        timeout=duration(config.timeout),
        headers=dict(config.headers),
        max_concurrency=config.max_concurrency,
        signing_secret_set=config.signing_secret is not None,
    )


def task_type(item: TaskType) -> pb.TaskType:
    return pb.TaskType(
        name=item.name,
        version=str(item.version),
        message_type=item.message_type,
        descriptors=descriptor_pb2.FileDescriptorSet.FromString(item.descriptors),
        registered_at=timestamp(item.registered_at),
    )
