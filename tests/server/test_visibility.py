"""The visibility timeout: a lease that runs out without a receipt is a failed attempt
("lease expired"), retried by policy, and the job can be leased again."""

from __future__ import annotations

import asyncio

from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import S, Wire, micros, seconds

NO_JITTER = pb.RetryPolicy(jitter=0.0)


async def expire(coordinator: Coordinator, clock: FakeClock, job: pb.LeasedJob) -> None:
    """Moves the clock past the job's lease and runs the reaper once."""
    clock.set(micros(job.lease_expires_at) + 1)
    await coordinator.reaper.run_once(clock.now())


async def test_an_expired_lease_counts_a_failed_attempt_with_a_lease_expiry_error(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    leased = await wire.lease_one()
    await expire(coordinator, clock, leased)
    job = await wire.get(leased.job_id)
    assert job.attempt == 1
    assert "lease expired" in job.last_error.message
    [attempt] = job.attempts
    assert (attempt.attempt, attempt.worker_id) == (1, "worker-1")
    assert attempt.outcome == pb.OUTCOME_UNSPECIFIED
    assert "lease expired" in attempt.error.message
    assert not job.HasField("lease_expires_at")


async def test_a_job_whose_lease_expired_can_be_leased_again_as_the_next_attempt(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    first = await wire.lease_one(worker_id="dead-worker")
    await expire(coordinator, clock, first)
    assert (await wire.get(first.job_id)).state == pb.JOB_STATE_AVAILABLE
    second = await wire.lease_one(worker_id="live-worker")
    assert second.job_id == first.job_id
    assert second.attempt == 2
    assert second.lease_token != first.lease_token


async def test_the_backoff_after_an_expired_lease_counts_from_the_lease_start(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    policy = pb.RetryPolicy(initial_backoff=seconds(60), jitter=0.0)
    await wire.enqueue(lease_duration=seconds(10), retry_policy=policy)
    leased_at = clock.now()
    leased = await wire.lease_one()
    await expire(coordinator, clock, leased)
    job = await wire.get(leased.job_id)
    assert job.state == pb.JOB_STATE_SCHEDULED
    assert micros(job.run_at) == leased_at + 60 * S
    clock.set(leased_at + 60 * S)
    await coordinator.waker.run_once(clock.now())
    assert (await wire.lease_one()).attempt == 2


async def test_an_expired_lease_on_the_last_attempt_fails_the_job(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(10))
    leased = await wire.lease_one()
    await expire(coordinator, clock, leased)
    job = await wire.get(leased.job_id)
    assert job.state == pb.JOB_STATE_FAILED
    assert "lease expired" in job.last_error.message
    assert micros(job.finished_at) == clock.now()
    assert await wire.lease() == []


async def test_the_reaper_leaves_a_lease_that_has_not_expired(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    leased = await wire.lease_one()
    clock.advance(9.999)
    await coordinator.reaper.run_once(clock.now())
    job = await wire.get(leased.job_id)
    assert (job.state, list(job.attempts)) == (pb.JOB_STATE_LEASED, [])
    assert (await wire.succeed(leased)).state == pb.JOB_STATE_SUCCEEDED


async def test_an_expired_lease_wakes_a_long_poll(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10), retry_policy=NO_JITTER)
    leased = await wire.lease_one(worker_id="dead-worker")
    waiting = asyncio.ensure_future(wire.lease(worker_id="live-worker", wait=seconds(5)))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await expire(coordinator, clock, leased)
    again = await asyncio.wait_for(waiting, 2)
    assert [j.job_id for j in again] == [leased.job_id]
