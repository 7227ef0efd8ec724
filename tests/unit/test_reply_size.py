"""The size bounds that cut Lease and ListJobs replies hold for the largest values each field
may take, and fit_in_reply keeps order, always sends one item that can be sent, and passes
over one that never can."""

from __future__ import annotations

from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.model import (
    LEASED_JOB_OVERHEAD,
    Job,
    JobError,
    JobState,
    ReplyLimit,
    RetryPolicy,
    fit_in_reply,
    listed_job_size,
)
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

NAME = "n" * 128  # queue and task type names: 1 to 128 characters
KEY = "k" * 256
ID = "f" * 64
LATE = Timestamp(seconds=253_402_300_799, nanos=999_999_999)  # 9999-12-31T23:59:59.999999999
LONG = Duration(seconds=315_576_000_000, nanos=999_999_999)
BIG_INT = -(2**31)  # negative int32s take ten bytes on the wire


def test_a_leased_job_never_exceeds_its_bound() -> None:
    payload, checkpoint = b"p" * 1000, b"c" * 500
    job = pb.LeasedJob(
        job_id=ID,
        lease_token=ID,
        queue=NAME,
        task_type=NAME,
        payload=payload,
        attempt=BIG_INT,
        max_attempts=BIG_INT,
        lease_expires_at=LATE,
        checkpoint=checkpoint,
        created_at=LATE,
        parent_job_id=ID,
        lease_duration=LONG,
        task_version="999999999.999999999.999999999",
    )
    reply = pb.LeaseResponse(jobs=[job])
    assert reply.ByteSize() <= len(payload) + len(checkpoint) + LEASED_JOB_OVERHEAD


def test_a_listed_job_never_exceeds_its_bound() -> None:
    error = JobError(message="é" * 16 * 1024, type="t" * 200)
    job = Job(
        job_id=ID,
        queue=NAME,
        task_type=NAME,
        payload=b"p" * 1000,
        state=JobState.FAILED,
        run_at=0,
        delay=0,
        priority=0,
        max_attempts=0,
        lease_duration=0,
        retry_policy=RetryPolicy(),
        idempotency_key=KEY,
        parent_job_id=ID,
        depth=0,
        attempt=0,
        checkpoint=b"c" * 10,
        result=b"r" * 100,
        last_error=error,
        created_at=0,
        finished_at=0,
        lease_expires_at=0,
        leased_by="w" * 200,
        cancel_requested=True,
        throttle_key=KEY,
        task_version="999999999.999999999.999999999",
    )
    message = pb.Job(
        job_id=ID,
        queue=NAME,
        task_type=NAME,
        payload=job.payload,
        run_at=LATE,
        delay=LONG,
        priority=BIG_INT,
        max_attempts=BIG_INT,
        lease_duration=LONG,
        retry_policy=pb.RetryPolicy(
            initial_backoff=LONG, multiplier=1e300, max_backoff=LONG, jitter=0.5
        ),
        idempotency_key=KEY,
        parent_job_id=ID,
        attempt=BIG_INT,
        checkpoint=job.checkpoint,
        state=pb.JOB_STATE_FAILED,
        result=job.result,
        last_error=pb.JobError(message=error.message, type=error.type, non_retryable=True),
        created_at=LATE,
        finished_at=LATE,
        lease_expires_at=LATE,
        leased_by="w" * 200,
        depth=BIG_INT,
        cancel_requested=True,
        throttle_key=KEY,
        task_version=job.task_version,
    )
    reply = pb.ListJobsResponse(jobs=[message])
    assert reply.ByteSize() <= listed_job_size(job)


def test_fit_in_reply_stops_at_the_first_item_past_the_budget() -> None:
    limit = ReplyLimit(budget=100, hard_limit=1000)
    assert fit_in_reply([40, 40, 30, 10], limit) == ([0, 1], True)


def test_fit_in_reply_keeps_everything_that_fits() -> None:
    assert fit_in_reply([40, 40], ReplyLimit(budget=100, hard_limit=1000)) == ([0, 1], False)


def test_fit_in_reply_always_sends_one_item_that_fits_the_hard_limit() -> None:
    assert fit_in_reply([500, 10], ReplyLimit(budget=100, hard_limit=1000)) == ([0], True)


def test_fit_in_reply_passes_over_an_item_that_can_never_be_sent() -> None:
    limit = ReplyLimit(budget=100, hard_limit=1000)
    assert fit_in_reply([5000, 10, 20], limit) == ([1, 2], False)
