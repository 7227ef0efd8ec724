"""Receipts on the wire: success, failure with backoff, retry_after, non-retryable errors,
dead-lettering on the last attempt, release, and unknown outcomes."""

from __future__ import annotations

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import S, Wire, micros, refused, seconds

# initial 10 s, x3, at most 60 s, no jitter: delays 10 s, 30 s, 60 s, 60 s ...
EXACT = pb.RetryPolicy(
    initial_backoff=seconds(10), multiplier=3.0, max_backoff=seconds(60), jitter=0.0
)


async def test_success_ends_the_job_succeeded_with_its_result(wire: Wire, clock: FakeClock) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    clock.advance(3)
    reply = await wire.succeed(leased, result=b"sent")
    job = await wire.get(leased.job_id)
    assert reply.state == job.state == pb.JOB_STATE_SUCCEEDED
    assert not reply.HasField("next_run_at")
    assert (job.result, micros(job.finished_at)) == (b"sent", clock.now())
    assert not job.HasField("lease_expires_at")
    [attempt] = job.attempts
    assert (attempt.attempt, attempt.outcome) == (1, pb.OUTCOME_SUCCESS)


async def test_a_failure_with_attempts_left_is_scheduled_after_the_backoff(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=5, retry_policy=EXACT)
    leased = await wire.lease_one()
    clock.advance(2)
    reply = await wire.fail(leased, message="smtp down")
    job = await wire.get(leased.job_id)
    assert reply.state == job.state == pb.JOB_STATE_SCHEDULED
    assert micros(reply.next_run_at) == micros(job.run_at) == clock.now() + 10 * S
    assert (job.last_error.message, job.last_error.type) == ("smtp down", "Boom")
    assert [a.outcome for a in job.attempts] == [pb.OUTCOME_FAILURE]


async def test_the_backoff_grows_by_the_multiplier_up_to_max_backoff(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=5, retry_policy=EXACT)
    delays = []
    for _ in range(3):
        leased = await wire.lease_one()
        reply = await wire.fail(leased)
        delays.append(micros(reply.next_run_at) - clock.now())
        clock.set(micros(reply.next_run_at))
        await coordinator.waker.run_once(clock.now())
    assert delays == [10 * S, 30 * S, 60 * S]


async def test_a_failed_job_is_not_leased_before_its_retry_time(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=5, retry_policy=EXACT)
    await wire.fail(await wire.lease_one())
    clock.advance(9.999)
    await coordinator.waker.run_once(clock.now())
    assert await wire.lease() == []
    clock.advance(0.001)
    await coordinator.waker.run_once(clock.now())
    assert (await wire.lease_one()).attempt == 2


async def test_retry_after_replaces_the_backoff(wire: Wire, clock: FakeClock) -> None:
    await wire.enqueue(max_attempts=5, retry_policy=EXACT)
    leased = await wire.lease_one()
    reply = await wire.fail(leased, retry_after=seconds(7))
    assert reply.state == pb.JOB_STATE_SCHEDULED
    assert micros(reply.next_run_at) == clock.now() + 7 * S


async def test_a_zero_retry_after_makes_the_job_available_at_once(wire: Wire) -> None:
    await wire.enqueue(max_attempts=5, retry_policy=EXACT)
    leased = await wire.lease_one()
    reply = await wire.fail(leased, retry_after=seconds(0))
    assert reply.state == pb.JOB_STATE_AVAILABLE
    assert (await wire.lease_one()).attempt == 2


async def test_a_non_retryable_failure_fails_the_job_at_once(wire: Wire, clock: FakeClock) -> None:
    await wire.enqueue(max_attempts=5)
    leased = await wire.lease_one()
    reply = await wire.fail(leased, message="bad address", non_retryable=True)
    job = await wire.get(leased.job_id)
    assert reply.state == job.state == pb.JOB_STATE_FAILED
    assert not reply.HasField("next_run_at")
    assert job.last_error.message == "bad address" and job.last_error.non_retryable
    assert micros(job.finished_at) == clock.now()


async def test_a_failure_on_the_last_attempt_dead_letters_the_job_keeping_its_error(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=2, retry_policy=EXACT)
    first = await wire.fail(await wire.lease_one(), message="first error")
    clock.set(micros(first.next_run_at))
    await coordinator.waker.run_once(clock.now())
    leased = await wire.lease_one()
    reply = await wire.fail(leased, message="second error")
    job = await wire.get(leased.job_id)
    assert reply.state == job.state == pb.JOB_STATE_FAILED
    assert job.last_error.message == "second error"
    assert [a.error.message for a in job.attempts] == ["first error", "second error"]
    assert job.attempt == 2
    assert await wire.lease() == []


async def test_release_makes_the_job_available_without_counting_an_attempt(
    wire: Wire,
) -> None:
    await wire.enqueue()
    first = await wire.lease_one()
    reply = await wire.receipt(first, pb.OUTCOME_RELEASE)
    job = await wire.get(first.job_id)
    assert reply.state == job.state == pb.JOB_STATE_AVAILABLE
    assert job.attempt == 0
    assert [a.outcome for a in job.attempts] == [pb.OUTCOME_RELEASE]
    second = await wire.lease_one()
    assert (second.job_id, second.attempt) == (first.job_id, first.attempt)


async def test_release_does_not_use_up_the_attempt_budget(wire: Wire) -> None:
    await wire.enqueue(max_attempts=1)
    for _ in range(3):
        await wire.receipt(await wire.lease_one(), pb.OUTCOME_RELEASE)
    last = await wire.lease_one()
    assert (last.attempt, last.max_attempts) == (1, 1)
    assert (await wire.succeed(last)).state == pb.JOB_STATE_SUCCEEDED


async def test_release_with_retry_after_schedules_the_job_after_that_delay(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    reply = await wire.receipt(leased, pb.OUTCOME_RELEASE, retry_after=seconds(15))
    assert reply.state == pb.JOB_STATE_SCHEDULED
    assert micros(reply.next_run_at) == clock.now() + 15 * S


@pytest.mark.parametrize("outcome", [pb.OUTCOME_UNSPECIFIED, 7])
async def test_an_unknown_outcome_is_invalid_and_changes_nothing(wire: Wire, outcome: int) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    before = await wire.get(leased.job_id)
    message = await refused(wire.receipt(leased, outcome), grpc.StatusCode.INVALID_ARGUMENT)
    assert "outcome" in message
    assert await wire.get(leased.job_id) == before
