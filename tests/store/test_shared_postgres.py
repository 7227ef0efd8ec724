"""Two coordinators on one PostgreSQL database (issue 9): claims, limits and receipts stay
exact when both serve at once. Each coordinator has its own writer connection, so their
transactions really interleave in the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.errors import Unavailable
from conveyor_server.main import Coordinator
from conveyor_server.store.dialects import PoolSettings
from conveyor_server.store.migrate import MIGRATIONS_DIR
from conveyor_server.store.sql import SqlStore
from databases import PostgresServer
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from store_support import TASK, query, store_of

QUEUE = "shared"


@pytest.fixture
async def pair(
    postgres: PostgresServer, clock: FakeClock
) -> AsyncIterator[list[tuple[Coordinator, rpc.CoordinatorServiceStub]]]:
    config = ServerConfig(
        db_url=postgres.clean_database(), listen="127.0.0.1:0", log_level="warning"
    )
    started: list[tuple[Coordinator, grpc.aio.Channel]] = []
    try:
        for _ in range(2):
            coordinator = await Coordinator.start(config, clock=clock)
            started.append((coordinator, grpc.aio.insecure_channel(coordinator.address)))
        yield [(c, rpc.CoordinatorServiceStub(ch)) for c, ch in started]
    finally:
        for coordinator, channel in started:
            await channel.close()
            await coordinator.stop(grace=1.0)


async def _fill(stub: rpc.CoordinatorServiceStub, count: int) -> None:
    jobs = [pb.JobSpec(queue=QUEUE, task_type=TASK) for _ in range(count)]
    await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=jobs))


async def _lease_everywhere(
    stubs: list[rpc.CoordinatorServiceStub], rounds: int, max_jobs: int
) -> list[pb.LeasedJob]:
    """`rounds` Leases on each coordinator at once; every job handed out."""
    calls = [
        stub.Lease(pb.LeaseRequest(worker_id=f"w{i}", queues=[QUEUE], max_jobs=max_jobs))
        for i in range(rounds)
        for stub in stubs
    ]
    return [job for reply in await asyncio.gather(*calls) for job in reply.jobs]


async def _set_queue(stub: rpc.CoordinatorServiceStub, queue: pb.Queue, path: str) -> None:
    await stub.UpdateQueue(pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=[path])))


async def test_concurrent_leases_on_two_coordinators_hand_out_each_job_once(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    stubs = [stub for _, stub in pair]
    await _fill(stubs[0], 300)
    leased = await _lease_everywhere(stubs, rounds=20, max_jobs=10)
    ids = [job.job_id for job in leased]
    assert len(ids) == len(set(ids)) == 300


async def test_a_concurrency_cap_holds_across_coordinators(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    stubs = [stub for _, stub in pair]
    await _set_queue(stubs[0], pb.Queue(name=QUEUE, max_concurrency=3), "max_concurrency")
    await _fill(stubs[1], 40)
    leased = await _lease_everywhere(stubs, rounds=10, max_jobs=5)
    assert len(leased) == 3


async def test_a_rate_limit_holds_across_coordinators(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    stubs = [stub for _, stub in pair]
    limit = pb.RateLimit(rate=0.001, burst=5)
    await _set_queue(stubs[0], pb.Queue(name=QUEUE, rate_limit=limit), "rate_limit")
    await _fill(stubs[1], 40)
    leased = await _lease_everywhere(stubs, rounds=10, max_jobs=3)
    assert len(leased) == 5


async def test_a_limit_changed_on_one_coordinator_binds_the_other_at_once(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    (_, first), (_, second) = pair
    await _fill(first, 10)
    await _set_queue(first, pb.Queue(name=QUEUE, max_concurrency=2), "max_concurrency")
    leased = await _lease_everywhere([second], rounds=1, max_jobs=10)
    assert len(leased) == 2


async def test_one_receipt_through_both_coordinators_at_once_is_applied_once(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    (coordinator, first), (_, second) = pair
    await _fill(first, 1)
    [job] = await _lease_everywhere([first], rounds=1, max_jobs=1)
    receipt = pb.ReceiptRequest(
        job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
    )
    replies = await asyncio.gather(first.Receipt(receipt), second.Receipt(receipt))
    assert {reply.state for reply in replies} == {pb.JOB_STATE_SUCCEEDED}
    attempts = await query(
        store_of(coordinator), "SELECT id FROM job_attempts WHERE job_id = :id", id=job.job_id
    )
    assert len(attempts) == 1


async def test_cancel_and_lease_racing_on_two_coordinators_leave_one_outcome(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    (_, first), (_, second) = pair
    await _fill(first, 1)
    [listed] = (await first.ListJobs(pb.ListJobsRequest(queue=QUEUE))).jobs
    cancelled, lease = await asyncio.gather(
        first.CancelJob(pb.CancelJobRequest(job_id=listed.job_id)),
        second.Lease(pb.LeaseRequest(worker_id="w", queues=[QUEUE], max_jobs=1)),
    )
    final = await first.GetJob(pb.GetJobRequest(job_id=listed.job_id))
    if lease.jobs:  # the lease won: the cancel asked the worker to stop
        assert (final.state, final.cancel_requested) == (pb.JOB_STATE_LEASED, True)
    else:  # the cancel won: nothing leased it
        assert final.state == pb.JOB_STATE_CANCELLED
    assert cancelled.state == final.state


async def test_a_statement_past_the_statement_timeout_is_cancelled(
    postgres: PostgresServer,
) -> None:
    store = SqlStore(postgres.clean_database(), pool=PoolSettings(size=1, statement_timeout_ms=50))
    await store.open()
    try:
        with pytest.raises(Unavailable) as refused:
            await store._read(lambda conn: conn.exec_driver_sql("SELECT pg_sleep(5)"))
        assert "statement timeout" in str(refused.value.__cause__)
    finally:
        await store.close()


async def test_each_maintenance_service_has_one_leader_among_coordinators(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]], clock: FakeClock
) -> None:
    (first, _), (second, _) = pair
    for name in ("reaper", "cron", "pruner"):
        services = [getattr(c, name) for c in (first, second)]
        answers = [await s.leadership.leads(clock.now()) for s in services]
        assert sorted(answers) == [False, True], name


async def test_a_stopped_coordinator_hands_its_services_to_the_other(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]], clock: FakeClock
) -> None:
    (first, _), (second, _) = pair
    leader, follower = (
        (first, second) if await first.reaper.leadership.leads(clock.now()) else (second, first)
    )
    await leader.stop(grace=1.0)
    clock.advance(5)  # the follower asks again at its next renewal
    assert await follower.reaper.leadership.leads(clock.now())


async def _until_long_polling(coordinator: Coordinator) -> None:
    """Until a Lease is subscribed to QUEUE's wake-ups on `coordinator` (polled: the
    coordinator has no event for it)."""
    for _ in range(1000):
        if coordinator.jobs._wakeups.waiting(QUEUE) > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no Lease is long-polling {QUEUE} on {coordinator.address}")


async def test_an_enqueue_on_one_coordinator_wakes_a_long_poll_on_the_other(
    pair: list[tuple[Coordinator, rpc.CoordinatorServiceStub]],
) -> None:
    (_, first), (second, second_stub) = pair
    wait = Duration(seconds=30)  # the longest: without the hint it would return only then
    waiting = asyncio.ensure_future(
        second_stub.Lease(pb.LeaseRequest(worker_id="w", queues=[QUEUE], max_jobs=1, wait=wait))
    )
    await _until_long_polling(second)
    await _fill(first, 1)
    reply = await asyncio.wait_for(waiting, timeout=20)  # well before the 30 s wait ends
    assert len(reply.jobs) == 1


async def test_coordinators_starting_together_on_a_new_database_all_start(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    stores = [SqlStore(url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        [version] = await query(stores[0], "SELECT version_num FROM alembic_version")
        assert version.version_num == _head_revision()
    finally:
        for store in stores:
            await store.close()
        postgres.drop_database(url)


def _head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()
