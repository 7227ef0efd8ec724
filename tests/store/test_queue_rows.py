"""Issue 7, item 1: an acknowledged job always sits in a queue that Lease hands out, whatever
failed around its enqueue (the queue-settings cache forgets what a rolled-back transaction
taught it, dispatch needs no queue row, and start-up repairs databases that lack one)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.store.queues import JobDefaults
from store_support import TASK, execute, failing_write, lease_ids, new_job, store_of


@pytest.fixture(autouse=True)
def long_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache lives for a second; an hour makes 'a retry within the second' certain."""
    monkeypatch.setattr(JobDefaults, "TTL_SECONDS", 3600.0)


async def assert_queue_row(stub: rpc.CoordinatorServiceStub, name: str) -> None:
    """The cache did not outlive the rollback: the queue's row was written with its job."""
    queue = await stub.GetQueue(pb.GetQueueRequest(name=name))
    assert queue.name == name


@pytest.mark.sqlite_only  # PRAGMA max_page_count stands in for a full disk
async def test_a_retry_after_a_failed_first_enqueue_is_leasable(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    store = store_of(coordinator)
    await store.set_max_page_count(1)  # no room for a new page: the disk is full
    big = pb.JobSpec(queue="fresh", task_type=TASK, payload=b"x" * 200_000)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Enqueue(pb.EnqueueRequest(job=big))
    await store.set_max_page_count(1_000_000)
    reply = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="fresh", task_type=TASK)))
    assert await lease_ids(stub, "fresh") == [reply.job_id]
    await assert_queue_row(stub, "fresh")


async def test_an_enqueue_sharing_a_group_with_a_bad_enqueue_is_leasable(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    store = store_of(coordinator)
    now = clock.now()
    good = new_job("fresh", now)
    bad = new_job("other", now, run_at=2**70)  # does not fit a 64-bit column
    outcomes = await asyncio.gather(
        store.enqueue([good], atomic=False, max_depth=16),
        store.enqueue([bad], atomic=False, max_depth=16),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException)
    assert isinstance(outcomes[1], BaseException)
    assert await lease_ids(stub, "fresh") == [good.job_id]
    await assert_queue_row(stub, "fresh")


async def test_an_enqueue_batch_sharing_a_group_with_a_failing_write_is_leasable(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    store = store_of(coordinator)
    batch = [new_job("fresh", clock.now()) for _ in range(3)]
    outcomes = await asyncio.gather(
        store.enqueue(batch, atomic=True, max_depth=16),
        store._write(failing_write),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException)
    assert isinstance(outcomes[1], RuntimeError)
    assert sorted(await lease_ids(stub, "fresh")) == sorted(j.job_id for j in batch)
    await assert_queue_row(stub, "fresh")


async def test_a_queue_with_jobs_but_no_row_is_still_dispatched(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    reply = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="bare", task_type=TASK)))
    await execute(store_of(coordinator), "DELETE FROM queues WHERE name = 'bare'")
    assert await lease_ids(stub, "bare") == [reply.job_id]


async def test_start_up_creates_the_missing_row_of_a_queue_with_jobs(
    server_config: ServerConfig, clock: FakeClock
) -> None:
    first = await Coordinator.start(server_config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            job = pb.JobSpec(queue="bare", task_type=TASK)
            await stub.Enqueue(pb.EnqueueRequest(job=job))
        await execute(store_of(first), "DELETE FROM queues WHERE name = 'bare'")
    finally:
        await first.stop(grace=1.0)
    second = await Coordinator.start(server_config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            queue = await stub.GetQueue(pb.GetQueueRequest(name="bare"))
            assert queue.name == "bare"
    finally:
        await second.stop(grace=1.0)
