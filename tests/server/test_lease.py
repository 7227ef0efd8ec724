"""Lease on the wire: dispatch order, the max_jobs bound, one holder at a time, fresh tokens,
long-polling, and scheduled jobs becoming due."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import QUEUE, TASK, S, Wire, micros, refused, seconds


async def test_higher_priority_is_leased_first(wire: Wire, clock: FakeClock) -> None:
    low = await wire.enqueue(priority=0)
    clock.advance(1)
    high = await wire.enqueue(priority=10)
    clock.advance(1)
    middle = await wire.enqueue(priority=5)
    leased = await wire.lease(max_jobs=3)
    assert [j.job_id for j in leased] == [high.job_id, middle.job_id, low.job_id]


async def test_within_a_priority_the_earliest_due_is_leased_first(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    later = await wire.enqueue(delay=seconds(5))  # enqueued first, due at +5 s
    clock.advance(1)
    sooner = await wire.enqueue()  # enqueued second, due at +1 s
    clock.advance(1)
    last = await wire.enqueue()  # due at +2 s
    clock.advance(5)
    await coordinator.waker.run_once(clock.now())
    leased = await wire.lease(max_jobs=3)
    assert [j.job_id for j in leased] == [sooner.job_id, last.job_id, later.job_id]


async def test_jobs_due_at_the_same_time_are_leased_in_enqueue_order(wire: Wire) -> None:
    specs = [pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"%d" % n) for n in range(20)]
    await wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=specs))
    leased = await wire.lease(max_jobs=20)
    assert [j.payload for j in leased] == [b"%d" % n for n in range(20)]


async def test_a_lease_hands_out_at_most_max_jobs(wire: Wire) -> None:
    reply = await wire.stub.EnqueueBatch(
        pb.EnqueueBatchRequest(jobs=[pb.JobSpec(queue=QUEUE, task_type=TASK) for _ in range(5)])
    )
    assert len(reply.results) == 5
    assert len(await wire.lease(max_jobs=3)) == 3
    assert len(await wire.lease(max_jobs=3)) == 2
    assert await wire.lease(max_jobs=3) == []


async def test_max_jobs_zero_means_one(wire: Wire) -> None:
    for _ in range(3):
        await wire.enqueue()
    assert len(await wire.lease(max_jobs=0)) == 1


async def test_max_jobs_over_1000_is_invalid(wire: Wire) -> None:
    message = await refused(wire.lease(max_jobs=1001), grpc.StatusCode.INVALID_ARGUMENT)
    assert "max_jobs" in message


async def test_a_lease_only_takes_jobs_of_the_named_queues(wire: Wire) -> None:
    await wire.enqueue(queue="elsewhere")
    assert await wire.lease() == []
    assert len(await wire.lease(queue="elsewhere")) == 1


async def test_a_leased_job_is_invisible_to_a_second_lease(wire: Wire) -> None:
    await wire.enqueue()
    first = await wire.lease(worker_id="worker-1")
    second = await wire.lease(worker_id="worker-2")
    assert len(first) == 1 and second == []


async def test_a_lease_records_the_holder_attempt_and_expiry(wire: Wire, clock: FakeClock) -> None:
    reply = await wire.enqueue(lease_duration=seconds(45))
    leased = await wire.lease_one(worker_id="host-1.pid-7")
    job = await wire.get(reply.job_id)
    assert (leased.job_id, leased.attempt, leased.max_attempts) == (reply.job_id, 1, 20)
    assert micros(leased.lease_duration) == 45 * S
    assert micros(leased.lease_expires_at) == clock.now() + 45 * S
    assert job.state == pb.JOB_STATE_LEASED
    assert (job.leased_by, job.attempt) == ("host-1.pid-7", 1)
    assert micros(job.lease_expires_at) == clock.now() + 45 * S


async def test_every_lease_gets_a_different_128_bit_token(wire: Wire) -> None:
    for _ in range(10):
        await wire.enqueue()
    leased = await wire.lease(max_jobs=10)
    tokens = [j.lease_token for j in leased]
    assert len(tokens) == 10 and len(set(tokens)) == 10
    assert all(re.fullmatch(r"[0-9a-f]{32}", token) for token in tokens)


async def test_leasing_the_same_job_again_gets_a_new_token(wire: Wire) -> None:
    await wire.enqueue()
    first = await wire.lease_one()
    await wire.receipt(first, pb.OUTCOME_RELEASE)
    second = await wire.lease_one()
    assert second.job_id == first.job_id
    assert second.lease_token != first.lease_token


async def test_a_long_poll_returns_as_soon_as_a_job_is_enqueued(wire: Wire) -> None:
    waiting = asyncio.ensure_future(wire.lease(wait=seconds(5)))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    started = time.monotonic()
    reply = await wire.enqueue(payload=b"late")
    leased = await waiting
    assert [j.job_id for j in leased] == [reply.job_id]
    assert time.monotonic() - started < 2


async def test_a_long_poll_whose_wait_runs_out_returns_empty(wire: Wire) -> None:
    started = time.monotonic()
    leased = await wire.lease(wait=seconds(0.3))
    elapsed = time.monotonic() - started
    assert leased == []
    assert 0.25 <= elapsed < 2


async def test_a_lease_without_wait_returns_at_once(wire: Wire) -> None:
    started = time.monotonic()
    assert await wire.lease() == []
    assert time.monotonic() - started < 1


async def test_a_wait_over_30_seconds_is_invalid(wire: Wire) -> None:
    message = await refused(wire.lease(wait=seconds(30.001)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "wait" in message


async def test_a_wait_of_exactly_30_seconds_is_allowed(wire: Wire) -> None:
    await wire.enqueue()
    assert len(await wire.lease(wait=seconds(30))) == 1


async def test_a_scheduled_job_is_not_leased_before_its_run_at(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(delay=seconds(10))
    clock.advance(9.999)
    await coordinator.waker.run_once(clock.now())
    assert await wire.lease() == []


async def test_a_scheduled_job_is_leasable_once_its_run_at_passes_and_the_waker_runs(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    reply = await wire.enqueue(delay=seconds(10))
    clock.advance(10)
    await coordinator.waker.run_once(clock.now())
    assert (await wire.get(reply.job_id)).state == pb.JOB_STATE_AVAILABLE
    assert [j.job_id for j in await wire.lease()] == [reply.job_id]


async def test_the_waker_wakes_a_long_poll_when_a_scheduled_job_becomes_due(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    reply = await wire.enqueue(delay=seconds(10))
    waiting = asyncio.ensure_future(wire.lease(wait=seconds(5)))
    await asyncio.sleep(0.1)
    clock.advance(10)
    await coordinator.waker.run_once(clock.now())
    leased = await asyncio.wait_for(waiting, 2)
    assert [j.job_id for j in leased] == [reply.job_id]
