"""Enqueue and EnqueueBatch on the wire: initial states, defaults, all-or-none batches and
idempotency keys."""

from __future__ import annotations

import asyncio

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from server_wire import QUEUE, TASK, S, Wire, at, micros, refused, seconds


async def test_a_job_without_run_at_or_delay_is_available_at_once(
    wire: Wire, clock: FakeClock
) -> None:
    reply = await wire.enqueue()
    job = await wire.get(reply.job_id)
    assert reply.state == pb.JOB_STATE_AVAILABLE and not reply.deduplicated
    assert job.state == pb.JOB_STATE_AVAILABLE
    assert micros(job.run_at) == clock.now() == micros(job.created_at)


async def test_a_job_with_a_delay_is_scheduled_for_now_plus_the_delay(
    wire: Wire, clock: FakeClock
) -> None:
    reply = await wire.enqueue(delay=seconds(90))
    job = await wire.get(reply.job_id)
    assert reply.state == job.state == pb.JOB_STATE_SCHEDULED
    assert micros(job.run_at) == clock.now() + 90 * S


async def test_a_job_with_a_future_run_at_is_scheduled_for_that_time(
    wire: Wire, clock: FakeClock
) -> None:
    due = clock.now() + 3600 * S
    reply = await wire.enqueue(run_at=at(due))
    job = await wire.get(reply.job_id)
    assert reply.state == job.state == pb.JOB_STATE_SCHEDULED
    assert micros(job.run_at) == due


async def test_a_run_at_in_the_past_is_available_at_once(wire: Wire, clock: FakeClock) -> None:
    reply = await wire.enqueue(run_at=at(clock.now() - 60 * S))
    assert reply.state == pb.JOB_STATE_AVAILABLE


async def test_unset_spec_fields_get_the_documented_defaults(wire: Wire) -> None:
    job = await wire.get((await wire.enqueue()).job_id)
    policy = job.retry_policy
    assert job.max_attempts == 20
    assert micros(job.lease_duration) == 30 * S
    assert micros(policy.initial_backoff) == 1 * S
    assert policy.multiplier == 2.0
    assert micros(policy.max_backoff) == 3600 * S
    assert policy.jitter == 0.2
    assert (job.priority, job.attempt, job.depth) == (0, 0, 0)


async def test_spec_fields_that_are_set_are_kept(wire: Wire) -> None:
    policy = pb.RetryPolicy(
        initial_backoff=seconds(5), multiplier=3.0, max_backoff=seconds(120), jitter=0.0
    )
    reply = await wire.enqueue(
        payload=b"\x00data",
        priority=7,
        max_attempts=4,
        lease_duration=seconds(45),
        retry_policy=policy,
    )
    job = await wire.get(reply.job_id)
    assert (job.queue, job.task_type, job.payload) == (QUEUE, TASK, b"\x00data")
    assert (job.priority, job.max_attempts, micros(job.lease_duration)) == (7, 4, 45 * S)
    assert micros(job.retry_policy.initial_backoff) == 5 * S
    assert job.retry_policy.multiplier == 3.0
    assert micros(job.retry_policy.max_backoff) == 120 * S
    assert job.retry_policy.jitter == 0.0


async def test_enqueue_batch_returns_one_result_per_job_in_order(wire: Wire) -> None:
    specs = [
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"first"),
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"second", delay=seconds(60)),
        pb.JobSpec(queue="other", task_type="other-task", payload=b"third"),
    ]
    reply = await wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=specs))
    assert [r.state for r in reply.results] == [
        pb.JOB_STATE_AVAILABLE,
        pb.JOB_STATE_SCHEDULED,
        pb.JOB_STATE_AVAILABLE,
    ]
    stored = [await wire.get(r.job_id) for r in reply.results]
    assert [j.payload for j in stored] == [b"first", b"second", b"third"]
    assert len({r.job_id for r in reply.results}) == 3


async def test_one_invalid_job_fails_the_whole_batch_and_stores_none(wire: Wire) -> None:
    specs = [
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"fine"),
        pb.JobSpec(queue="bad queue!", task_type=TASK),
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"also fine"),
    ]
    message = await refused(
        wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=specs)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "jobs[1].queue" in message
    assert await wire.jobs() == []


async def test_a_key_conflict_in_a_batch_stores_none_of_the_batch(wire: Wire) -> None:
    await wire.enqueue(payload=b"original", idempotency_key="k")
    specs = [
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"new"),
        pb.JobSpec(queue=QUEUE, task_type=TASK, payload=b"changed", idempotency_key="k"),
    ]
    await refused(
        wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=specs)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert [j.payload for j in await wire.jobs()] == [b"original"]


async def test_an_empty_batch_is_invalid(wire: Wire) -> None:
    await refused(
        wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[])), grpc.StatusCode.INVALID_ARGUMENT
    )


# -- idempotency keys --------------------------------------------------------------------------


async def test_same_key_and_content_returns_the_existing_job_deduplicated(wire: Wire) -> None:
    first = await wire.enqueue(payload=b"p", idempotency_key="order-1")
    again = await wire.enqueue(payload=b"p", idempotency_key="order-1")
    assert not first.deduplicated
    assert (again.job_id, again.deduplicated, again.state) == (
        first.job_id,
        True,
        pb.JOB_STATE_AVAILABLE,
    )
    assert len(await wire.jobs()) == 1


async def test_same_key_with_a_different_payload_is_already_exists(wire: Wire) -> None:
    first = await wire.enqueue(payload=b"p", idempotency_key="order-1")
    message = await refused(
        wire.enqueue(payload=b"other", idempotency_key="order-1"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert "order-1" in message
    assert [j.job_id for j in await wire.jobs()] == [first.job_id]


async def test_same_key_with_a_different_task_type_is_already_exists(wire: Wire) -> None:
    await wire.enqueue(task_type="a", payload=b"p", idempotency_key="order-1")
    await refused(
        wire.enqueue(task_type="b", payload=b"p", idempotency_key="order-1"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert len(await wire.jobs()) == 1


async def test_a_key_is_unique_per_queue_not_globally(wire: Wire) -> None:
    here = await wire.enqueue(queue="a", payload=b"p", idempotency_key="order-1")
    there = await wire.enqueue(queue="b", payload=b"p", idempotency_key="order-1")
    assert here.job_id != there.job_id
    assert not there.deduplicated
    assert {j.queue for j in await wire.jobs()} == {"a", "b"}


async def test_concurrent_enqueues_with_one_key_make_exactly_one_job(wire: Wire) -> None:
    replies = await asyncio.gather(
        *(wire.enqueue(payload=b"p", idempotency_key="once") for _ in range(20))
    )
    assert len({r.job_id for r in replies}) == 1
    assert [r.deduplicated for r in replies].count(False) == 1
    assert len(await wire.jobs()) == 1
