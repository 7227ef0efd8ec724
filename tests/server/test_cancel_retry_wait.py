"""CancelJob, RetryJob and WaitJob on the wire, and NOT_FOUND for job ids that do not exist."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import Wire, micros, refused, seconds

UNKNOWN_ID = "0" * 32


async def cancel(wire: Wire, job_id: str) -> pb.Job:
    job: pb.Job = await wire.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    return job


async def retry(wire: Wire, job_id: str) -> pb.Job:
    job: pb.Job = await wire.stub.RetryJob(pb.RetryJobRequest(job_id=job_id))
    return job


async def wait(wire: Wire, job_id: str, timeout: float) -> pb.Job:
    job: pb.Job = await wire.stub.WaitJob(
        pb.WaitJobRequest(job_id=job_id, timeout=seconds(timeout))
    )
    return job


async def dead_letter(wire: Wire) -> str:
    """A job that failed for good (FAILED) after one non-retryable attempt."""
    reply = await wire.enqueue(max_attempts=3)
    await wire.fail(await wire.lease_one(), message="gave up", non_retryable=True)
    return reply.job_id


# -- cancel ------------------------------------------------------------------------------------


async def test_cancelling_an_available_job_cancels_it_at_once(wire: Wire, clock: FakeClock) -> None:
    reply = await wire.enqueue()
    job = await cancel(wire, reply.job_id)
    assert job.state == pb.JOB_STATE_CANCELLED
    assert micros(job.finished_at) == clock.now()
    assert (await wire.get(reply.job_id)).state == pb.JOB_STATE_CANCELLED
    assert await wire.lease() == []


async def test_cancelling_a_scheduled_job_cancels_it_at_once(wire: Wire) -> None:
    reply = await wire.enqueue(delay=seconds(60))
    assert (await cancel(wire, reply.job_id)).state == pb.JOB_STATE_CANCELLED


async def test_cancelling_a_leased_job_asks_its_worker_through_the_heartbeat(
    wire: Wire,
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    job = await cancel(wire, leased.job_id)
    assert (job.state, job.cancel_requested) == (pb.JOB_STATE_LEASED, True)
    assert (await wire.heartbeat(leased)).cancel_requested


async def test_a_failure_receipt_after_cancel_ends_the_job_cancelled(wire: Wire) -> None:
    await wire.enqueue(max_attempts=5)
    leased = await wire.lease_one()
    await cancel(wire, leased.job_id)
    reply = await wire.fail(leased, message="stopped")
    job = await wire.get(leased.job_id)
    assert reply.state == job.state == pb.JOB_STATE_CANCELLED
    assert job.HasField("finished_at")


async def test_a_release_after_cancel_ends_the_job_cancelled(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await cancel(wire, leased.job_id)
    assert (await wire.receipt(leased, pb.OUTCOME_RELEASE)).state == pb.JOB_STATE_CANCELLED


async def test_a_success_after_cancel_ends_the_job_succeeded(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await cancel(wire, leased.job_id)
    assert (await wire.succeed(leased, b"done anyway")).state == pb.JOB_STATE_SUCCEEDED


async def test_a_cancelled_lease_that_expires_ends_the_job_cancelled(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    leased = await wire.lease_one()
    await cancel(wire, leased.job_id)
    clock.advance(11)
    await coordinator.reaper.run_once(clock.now())
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_CANCELLED


async def test_cancelling_a_finished_job_is_a_failed_precondition(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.succeed(leased)
    message = await refused(cancel(wire, leased.job_id), grpc.StatusCode.FAILED_PRECONDITION)
    assert "SUCCEEDED" in message


# -- retry -------------------------------------------------------------------------------------


async def test_retrying_a_failed_job_makes_it_available_with_a_fresh_budget(wire: Wire) -> None:
    job_id = await dead_letter(wire)
    job = await retry(wire, job_id)
    assert (job.state, job.attempt, job.max_attempts) == (pb.JOB_STATE_AVAILABLE, 0, 3)
    assert [a.error.message for a in job.attempts] == ["gave up"]  # history kept
    leased = await wire.lease_one()
    assert (leased.job_id, leased.attempt, leased.max_attempts) == (job_id, 1, 3)


async def test_a_retried_job_can_fail_again_through_its_whole_budget(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    reply = await wire.enqueue(max_attempts=2, retry_policy=pb.RetryPolicy(jitter=0.0))
    first = await wire.fail(await wire.lease_one())
    clock.set(micros(first.next_run_at))
    await coordinator.waker.run_once(clock.now())
    assert (await wire.fail(await wire.lease_one())).state == pb.JOB_STATE_FAILED
    await retry(wire, reply.job_id)
    again = await wire.fail(await wire.lease_one())
    assert again.state == pb.JOB_STATE_SCHEDULED  # attempt 1 of 2 again: retried, not dead
    assert len((await wire.get(reply.job_id)).attempts) == 3


async def test_retrying_a_cancelled_job_makes_it_available(wire: Wire) -> None:
    reply = await wire.enqueue()
    await cancel(wire, reply.job_id)
    job = await retry(wire, reply.job_id)
    assert (job.state, job.cancel_requested) == (pb.JOB_STATE_AVAILABLE, False)
    assert not job.HasField("finished_at")
    assert (await wire.lease_one()).job_id == reply.job_id


async def test_retrying_an_available_job_is_a_failed_precondition(wire: Wire) -> None:
    reply = await wire.enqueue()
    message = await refused(retry(wire, reply.job_id), grpc.StatusCode.FAILED_PRECONDITION)
    assert "AVAILABLE" in message
    assert (await wire.get(reply.job_id)).state == pb.JOB_STATE_AVAILABLE


async def test_retrying_a_succeeded_job_is_a_failed_precondition(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.succeed(leased)
    await refused(retry(wire, leased.job_id), grpc.StatusCode.FAILED_PRECONDITION)


# -- wait --------------------------------------------------------------------------------------


async def test_wait_returns_as_soon_as_the_job_finishes(wire: Wire) -> None:
    reply = await wire.enqueue()
    leased = await wire.lease_one()
    waiting = asyncio.ensure_future(wait(wire, reply.job_id, timeout=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    started = time.monotonic()
    await wire.succeed(leased, result=b"answer")
    job = await waiting
    assert time.monotonic() - started < 2
    assert (job.state, job.result) == (pb.JOB_STATE_SUCCEEDED, b"answer")


async def test_wait_returns_when_the_job_is_cancelled(wire: Wire) -> None:
    reply = await wire.enqueue()
    waiting = asyncio.ensure_future(wait(wire, reply.job_id, timeout=10))
    await asyncio.sleep(0.1)
    await cancel(wire, reply.job_id)
    job = await asyncio.wait_for(waiting, 2)
    assert job.state == pb.JOB_STATE_CANCELLED


async def test_wait_returns_the_job_as_it_is_when_the_timeout_passes(wire: Wire) -> None:
    reply = await wire.enqueue()
    started = time.monotonic()
    job = await wait(wire, reply.job_id, timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert job.state == pb.JOB_STATE_AVAILABLE


async def test_wait_on_a_finished_job_returns_at_once(wire: Wire) -> None:
    job_id = await dead_letter(wire)
    started = time.monotonic()
    job = await wait(wire, job_id, timeout=10)
    assert time.monotonic() - started < 1
    assert job.state == pb.JOB_STATE_FAILED


async def test_a_wait_timeout_over_300_seconds_is_invalid(wire: Wire) -> None:
    reply = await wire.enqueue()
    message = await refused(wait(wire, reply.job_id, 301), grpc.StatusCode.INVALID_ARGUMENT)
    assert "timeout" in message


# -- unknown ids -------------------------------------------------------------------------------

UNKNOWN_ID_CALLS: dict[str, Callable[[Wire], Awaitable[Any]]] = {
    "GetJob": lambda w: w.get(UNKNOWN_ID),
    "CancelJob": lambda w: cancel(w, UNKNOWN_ID),
    "RetryJob": lambda w: retry(w, UNKNOWN_ID),
    "WaitJob": lambda w: wait(w, UNKNOWN_ID, 1),
    "Heartbeat": lambda w: w.stub.Heartbeat(
        pb.HeartbeatRequest(job_id=UNKNOWN_ID, lease_token="a" * 32)
    ),
    "Receipt": lambda w: w.stub.Receipt(
        pb.ReceiptRequest(job_id=UNKNOWN_ID, lease_token="a" * 32, outcome=pb.OUTCOME_SUCCESS)
    ),
}


@pytest.mark.parametrize("method", list(UNKNOWN_ID_CALLS))
async def test_an_unknown_job_id_is_not_found(wire: Wire, method: str) -> None:
    started = time.monotonic()
    message = await refused(UNKNOWN_ID_CALLS[method](wire), grpc.StatusCode.NOT_FOUND)
    assert UNKNOWN_ID in message
    assert time.monotonic() - started < 1  # WaitJob does not wait out its timeout first
