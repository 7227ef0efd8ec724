"""Issue 7, item 2: one bad row never stops a background service or a Lease. Rows are poisoned
with raw SQL (the API would refuse these values): absurd numbers, which the arithmetic now
clamps, and values of the wrong type, which no clamp can save and which must be isolated
(processed alone, marked, logged, counted) while the healthy rows go on."""

from __future__ import annotations

import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.lifecycle import MAX_RETRY_DELAY
from conveyor_server.core.model import JobState
from conveyor_server.errors import ResourceExhausted
from conveyor_server.main import Coordinator
from conveyor_server.store.sql import ISOLATED_ERROR_TYPE
from google.protobuf.duration_pb2 import Duration
from store_support import enqueue, execute, lease_ids, query, store_of

S = 1_000_000
LEASE = Duration(seconds=10)


async def _expired_leases(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock, count: int
) -> list[str]:
    ids = [await enqueue(stub, "rescue", lease_duration=LEASE) for _ in range(count)]
    assert sorted(await lease_ids(stub, "rescue", max_jobs=count)) == sorted(ids)
    clock.advance(60)
    return ids


async def _states(coordinator: Coordinator, ids: list[str]) -> dict[str, int]:
    rows = await query(store_of(coordinator), "SELECT id, state FROM jobs")
    return {row.id: row.state for row in rows if row.id in ids}


async def test_an_absurd_backoff_does_not_stop_lease_rescue(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    bad, *healthy = await _expired_leases(coordinator, stub, clock, 3)
    huge = 9_200_000_000_000 * S  # 9.2e12 s: the lease start plus this overflows 64 bits
    await execute(
        store_of(coordinator),
        "UPDATE jobs SET retry_initial_backoff = :v, retry_max_backoff = :v WHERE id = :id",
        v=huge,
        id=bad,
    )
    await coordinator.reaper.run_once(clock.now())
    states = await _states(coordinator, [bad, *healthy])
    assert all(states[i] in (JobState.AVAILABLE, JobState.SCHEDULED) for i in healthy)
    [row] = await query(store_of(coordinator), "SELECT state, run_at FROM jobs WHERE id=:i", i=bad)
    assert row.state == JobState.SCHEDULED
    assert row.run_at <= clock.now() + MAX_RETRY_DELAY


@pytest.mark.sqlite_only  # a text value in a REAL column: only SQLite's dynamic typing holds one
async def test_a_job_whose_retry_cannot_be_computed_is_failed_alone(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    bad, *healthy = await _expired_leases(coordinator, stub, clock, 3)
    await execute(
        store_of(coordinator), "UPDATE jobs SET retry_multiplier = 'abc' WHERE id = :id", id=bad
    )
    await coordinator.reaper.run_once(clock.now())
    states = await _states(coordinator, [bad, *healthy])
    assert all(states[i] in (JobState.AVAILABLE, JobState.SCHEDULED) for i in healthy)
    [row] = await query(
        store_of(coordinator), "SELECT state, error_type FROM jobs WHERE id = :i", i=bad
    )
    assert (row.state, row.error_type) == (JobState.FAILED, ISOLATED_ERROR_TYPE)
    assert coordinator.reaper.isolated_rows == 1
    await coordinator.reaper.run_once(clock.now())  # marked: not met again
    assert coordinator.reaper.isolated_rows == 1


async def _create_schedule(stub: rpc.CoordinatorServiceStub, name: str, queue: str) -> None:
    schedule = pb.Schedule(
        name=name, cron="* * * * *", job=pb.JobSpec(queue=queue, task_type="task")
    )
    await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule))


async def test_a_schedule_that_cannot_fire_is_paused_and_the_others_fire(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await _create_schedule(stub, "bad", "bad-queue")
    await _create_schedule(stub, "good", "good-queue")
    store = store_of(coordinator)
    # A zone no tz database knows (only a damaged row holds one: the door checks zones), so
    # the schedule's next fire time cannot be computed.
    await execute(store, "UPDATE schedules SET timezone = :z WHERE name = 'bad'", z="No/Such_Zone")
    clock.advance(120)
    await coordinator.cron.run_once(clock.now())
    good_jobs = await query(store, "SELECT id FROM jobs WHERE queue = 'good-queue'")
    assert len(good_jobs) >= 1
    assert await query(store, "SELECT id FROM jobs WHERE queue = 'bad-queue'") == []
    [bad] = await query(store, "SELECT paused FROM schedules WHERE name = 'bad'")
    assert bad.paused
    assert coordinator.cron.isolated_rows == 1


async def _finished_long_ago(coordinator: Coordinator, stub: rpc.CoordinatorServiceStub) -> str:
    job_id = await enqueue(stub, "kept-short")
    await execute(
        store_of(coordinator),
        "UPDATE jobs SET state = :s, finished_at = 1 WHERE id = :id",
        s=int(JobState.SUCCEEDED),
        id=job_id,
    )
    return job_id


async def test_a_tiny_per_key_rate_does_not_stop_retention(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub, "slow-keys")
    store = store_of(coordinator)
    await execute(
        store, "UPDATE queues SET key_rate = 1e-14, key_burst = 10 WHERE name = 'slow-keys'"
    )
    old = await _finished_long_ago(coordinator, stub)
    await coordinator.pruner.run_once(clock.now())
    assert await query(store, "SELECT id FROM jobs WHERE id = :i", i=old) == []


@pytest.mark.sqlite_only  # text in an INTEGER column: only SQLite's dynamic typing holds it
async def test_a_queue_whose_retention_cannot_be_read_is_isolated_and_others_pruned(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub, "broken")
    store = store_of(coordinator)
    await execute(store, "UPDATE queues SET retain_succeeded = 'abc' WHERE name = 'broken'")
    old = await _finished_long_ago(coordinator, stub)
    await coordinator.pruner.run_once(clock.now())
    assert await query(store, "SELECT id FROM jobs WHERE id = :i", i=old) == []
    assert coordinator.pruner.isolated_rows == 1


async def test_a_lease_naming_a_queue_with_an_absurd_rate_still_serves_the_others(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub, "crawl")
    fast = await enqueue(stub, "fast")
    await execute(
        store_of(coordinator),
        "UPDATE queues SET rate = 5e-324, burst = 1, tokens = 0, tokens_at = :now "
        "WHERE name = 'crawl'",
        now=clock.now(),
    )
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["crawl", "fast"], max_jobs=2))
    assert [job.job_id for job in reply.jobs] == [fast]


@pytest.mark.sqlite_only  # text in an INTEGER column: only SQLite's dynamic typing holds it
async def test_a_lease_naming_a_queue_with_an_unreadable_row_still_serves_the_others(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    await enqueue(stub, "broken")
    fast = await enqueue(stub, "fast")
    await execute(
        store_of(coordinator), "UPDATE queues SET max_concurrency = 'abc' WHERE name = 'broken'"
    )
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["broken", "fast"], max_jobs=2))
    assert [job.job_id for job in reply.jobs] == [fast]


@pytest.mark.sqlite_only  # PRAGMA max_page_count stands in for a full disk
async def test_a_full_disk_during_lease_rescue_fails_no_job(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    """A database fault is not a row's fault: nothing is isolated, every lease stays for the
    next run."""
    ids = [await enqueue(stub, "rescue", lease_duration=LEASE) for _ in range(50)]
    await lease_ids(stub, "rescue", max_jobs=50)
    store = store_of(coordinator)
    clock.advance(60)
    await store.set_max_page_count(1)  # the rescue's 50 attempt records need new pages
    with pytest.raises(ResourceExhausted):
        await coordinator.reaper.run_once(clock.now())
    states = await _states(coordinator, ids)
    assert set(states.values()) == {JobState.LEASED}
    assert coordinator.reaper.isolated_rows == 0
