"""Rows <-> domain values, and the small pure helpers of the SQL store."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from conveyor_server.core.model import (
    LEASED_JOB_OVERHEAD,
    Attempt,
    EnqueueResult,
    Job,
    JobError,
    JobState,
    LeasedJob,
    LeaseHolder,
    Micros,
    NewJob,
    Outcome,
    ResolvedSettings,
    RetryPolicy,
    TransitionResult,
    Version,
    first_lease,
)
from conveyor_server.errors import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    LeaseLost,
    NotFound,
    shown,
)
from conveyor_server.store.blobs import BlobCodec, BlobUnreadable

# SQLite allows 32,766 bound variables per statement; IN lists stay far below that.
IN_CHUNK = 500


def lease_tokens(job_ids: Sequence[str]) -> dict[str, str]:
    """A fresh 128-bit token from the OS's CSPRNG for every job, in one system call."""
    entropy = secrets.token_hex(16 * len(job_ids))
    return {job_id: entropy[32 * i : 32 * i + 32] for i, job_id in enumerate(job_ids)}


def chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]


def job_row(
    job: NewJob, depth: int, settings: ResolvedSettings, blobs: BlobCodec
) -> dict[str, Any]:
    policy = settings.retry_policy
    return {
        "id": job.job_id,
        "queue": job.queue,
        "task_type": job.task_type,
        "payload": blobs.seal(job.job_id, "payload", job.payload),
        "state": job.initial_state(),
        "priority": job.priority,
        "run_at": job.run_at,
        "delay": job.delay,
        "max_attempts": settings.max_attempts,
        "attempt": 0,
        "lease_duration": settings.lease_duration,
        "retry_initial_backoff": policy.initial_backoff,
        "retry_multiplier": policy.multiplier,
        "retry_max_backoff": policy.max_backoff,
        "retry_jitter": policy.jitter,
        "idempotency_key": job.idempotency_key,
        "parent_job_id": job.parent_job_id,
        "depth": depth,
        "cancel_requested": False,
        "lease_unconfirmed": False,
        "created_at": job.created_at,
        "throttle_key": job.throttle_key,
        "traceparent": job.traceparent,
        **_version_columns(job.task_version),
        **_UNSET_AT_ENQUEUE,
    }


def _version_columns(version: Version | None) -> dict[str, Any]:
    if version is None:
        return dict.fromkeys(["task_version", "version_major", "version_minor", "version_patch"])
    return {
        "task_version": str(version),
        "version_major": version.major,
        "version_minor": version.minor,
        "version_patch": version.patch,
    }


# Columns that only later transitions fill; the insert names every column.
_UNSET_AT_ENQUEUE = dict.fromkeys(
    [
        "lease_token",
        "leased_by",
        "leased_at",
        "lease_expires_at",
        "checkpoint",
        "result",
        "error_message",
        "error_type",
        "error_non_retryable",
        "finished_at",
        "receipt_digest",
    ]
)


def fresh_result(job: NewJob) -> EnqueueResult:
    return EnqueueResult(
        job_id=job.job_id,
        deduplicated=False,
        state=job.initial_state(),
        queue=job.queue,
        task_type=job.task_type,
        run_at=job.run_at,
    )


def keyed_outcome(
    job: NewJob, holder: sa.Row[Any], blobs: BlobCodec
) -> EnqueueResult | ConveyorError:
    if holder.id == job.job_id:
        return fresh_result(job)
    try:
        payload = blobs.open(holder.id, "payload", holder.payload)
    except BlobUnreadable as unreadable:
        return unreadable
    if holder.task_type != job.task_type or payload != job.payload:
        return AlreadyExists(
            f"idempotency_key {shown(job.idempotency_key)} in queue {shown(job.queue)} already "
            f"belongs to job {holder.id} with a different task_type or payload; use a new key "
            "for new work"
        )
    return EnqueueResult(
        job_id=holder.id,
        deduplicated=True,
        state=JobState(holder.state),
        queue=holder.queue,
        task_type=holder.task_type,
        run_at=holder.run_at,
    )


def fencing_problem(
    job_id: str, token: str, row: sa.Row[Any] | None, now: Micros
) -> ConveyorError | None:
    if row is None:
        return NotFound(f"job {shown(job_id)} not found")
    if row.state != JobState.LEASED or row.lease_token != token:
        return LeaseLost(
            f"lease_token does not hold job {shown(job_id)} (it is {JobState(row.state).name}, "
            "leased again, or the token is wrong): stop working on it and do not report it"
        )
    if row.lease_expires_at <= now:
        return LeaseLost(
            f"the lease on job {shown(job_id)} expired; the job will be retried: stop working on it"
        )
    return None


def lease_holder(row: sa.Row[Any]) -> LeaseHolder:
    return LeaseHolder(
        job_id=row.id,
        queue=row.queue,
        task_type=row.task_type,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        retry_policy=RetryPolicy(
            initial_backoff=row.retry_initial_backoff,
            multiplier=row.retry_multiplier,
            max_backoff=row.retry_max_backoff,
            jitter=row.retry_jitter,
        ),
        leased_by=row.leased_by or "",
        leased_at=row.leased_at or 0,
        cancel_requested=bool(row.cancel_requested),
        unconfirmed=bool(row.lease_unconfirmed),
    )


def receipt_digest(outcome: Outcome, result: bytes | None) -> str:
    """What a repeated receipt must match to count as a retry of the applied one: its outcome
    and result (a hash, so that a large result is not kept twice)."""
    digest = hashlib.sha256(bytes([int(outcome)]))
    digest.update(result or b"")
    return digest.hexdigest()


def repeated_receipt(
    row: sa.Row[Any], outcome: Outcome, result: bytes | None
) -> TransitionResult | ConveyorError:
    """A receipt whose token already settled the job: harmless when it repeats the applied
    one, a contradiction otherwise (nothing changes either way). Rows settled before the
    digest was kept have none and count as repeats."""
    stored = row.receipt_digest
    if stored is None or stored == receipt_digest(outcome, result):
        return replayed_result(row)
    return conflicting_receipt(row.id)


def conflicting_receipt(job_id: str) -> ConveyorError:
    return FailedPrecondition(
        f"job {job_id!r} was already reported for this lease with another outcome or result; "
        "a repeated receipt must equal the first, and this one was not applied"
    )


def transition_params(
    job_id: str,
    token: str,
    transition: Any,
    *,
    keep_token: bool,
    blobs: BlobCodec,
    digest: str | None = None,
) -> dict[str, Any]:
    """`digest`: the receipt's receipt_digest (None when a lease expired)."""
    error: JobError | None = transition.error
    return {
        "b_id": job_id,
        "b_token": token,
        "b_state": int(transition.state),
        "b_run_at": transition.run_at,
        "b_attempt_delta": transition.attempt_delta,
        "b_result": blobs.seal(job_id, "result", transition.result),
        "b_error_message": error.message if error else None,
        "b_error_type": error.type if error else None,
        "b_error_non_retryable": error.non_retryable if error else None,
        "b_finished_at": transition.finished_at,
        "b_new_token": token if keep_token else None,
        "b_receipt_digest": digest,
    }


def history_row(
    holder: LeaseHolder, now: Micros, outcome: Outcome, error: JobError | None
) -> dict[str, Any]:
    return {
        "job_id": holder.job_id,
        "attempt": holder.attempt,
        "worker_id": holder.leased_by,
        "started_at": holder.leased_at,
        "finished_at": now,
        "outcome": int(outcome),
        "error_message": error.message if error else None,
        "error_type": error.type if error else None,
        "error_non_retryable": error.non_retryable if error else None,
    }


def transition_result(holder: LeaseHolder, transition: Any) -> TransitionResult:
    return TransitionResult(
        job_id=holder.job_id,
        queue=holder.queue,
        task_type=holder.task_type,
        attempt=holder.attempt,
        worker_id=holder.leased_by,
        state=transition.state,
        run_at=transition.run_at,
    )


def replayed_result(row: sa.Row[Any]) -> TransitionResult:
    state = JobState(row.state)
    pending = state in (JobState.SCHEDULED, JobState.AVAILABLE)
    return TransitionResult(
        job_id=row.id,
        queue=row.queue,
        task_type=row.task_type,
        attempt=row.attempt,
        worker_id=row.leased_by or "",
        state=state,
        run_at=row.run_at if pending else None,
        replayed=True,
    )


def as_replay(done: TransitionResult) -> TransitionResult:
    return TransitionResult(
        job_id=done.job_id,
        queue=done.queue,
        task_type=done.task_type,
        attempt=done.attempt,
        worker_id=done.worker_id,
        state=done.state,
        run_at=done.run_at,
        replayed=True,
    )


def job_error(
    message: str | None, type_: str | None, non_retryable: bool | None
) -> JobError | None:
    if message is None and type_ is None:
        return None
    return JobError(message=message or "", type=type_ or "", non_retryable=bool(non_retryable))


def attempt_from_row(row: sa.Row[Any]) -> Attempt:
    return Attempt(
        attempt=row.attempt,
        worker_id=row.worker_id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=Outcome(row.outcome),
        error=job_error(row.error_message, row.error_type, row.error_non_retryable),
    )


def leased_job_size(row: sa.Row[Any]) -> int:
    """An upper bound of the job's size in a Lease reply."""
    return len(row.payload) + len(row.checkpoint or b"") + LEASED_JOB_OVERHEAD


def job_from_row(row: sa.Row[Any], attempts: tuple[Attempt, ...], blobs: BlobCodec) -> Job:
    return Job(
        job_id=row.id,
        queue=row.queue,
        task_type=row.task_type,
        payload=blobs.open(row.id, "payload", row.payload) or b"",
        state=JobState(row.state),
        run_at=row.run_at,
        delay=row.delay,
        priority=row.priority,
        max_attempts=row.max_attempts,
        lease_duration=row.lease_duration,
        retry_policy=RetryPolicy(
            initial_backoff=row.retry_initial_backoff,
            multiplier=row.retry_multiplier,
            max_backoff=row.retry_max_backoff,
            jitter=row.retry_jitter,
        ),
        idempotency_key=row.idempotency_key,
        parent_job_id=row.parent_job_id,
        depth=row.depth,
        attempt=row.attempt,
        checkpoint=blobs.open(row.id, "checkpoint", row.checkpoint),
        result=blobs.open(row.id, "result", row.result),
        last_error=job_error(row.error_message, row.error_type, row.error_non_retryable),
        created_at=row.created_at,
        finished_at=row.finished_at,
        lease_expires_at=row.lease_expires_at if row.state == JobState.LEASED else None,
        leased_by=row.leased_by,
        cancel_requested=bool(row.cancel_requested),
        throttle_key=row.throttle_key,
        task_version=row.task_version or "",
        attempts=attempts,
        traceparent=row.traceparent or "",
    )


def claimed_job(
    row: sa.Row[Any], token: str, now: Micros, confirm_within: Micros | None, blobs: BlobCodec
) -> LeasedJob:
    """The job as a worker receives it, from its row as read just before the claim, with what
    the claim set: the token, the next attempt and the expiry (the confirmation window's end
    for a lease taken with confirmation). BlobUnreadable when its payload or checkpoint cannot
    be opened."""
    return LeasedJob(
        job_id=row.id,
        lease_token=token,
        queue=row.queue,
        task_type=row.task_type,
        payload=blobs.open(row.id, "payload", row.payload) or b"",
        attempt=row.attempt + 1,
        max_attempts=row.max_attempts,
        lease_expires_at=now + first_lease(row.lease_duration, confirm_within),
        lease_duration=row.lease_duration,
        checkpoint=blobs.open(row.id, "checkpoint", row.checkpoint),
        created_at=row.created_at,
        parent_job_id=row.parent_job_id,
        task_version=row.task_version or "",
        traceparent=row.traceparent or "",
    )
