"""Flow control: token buckets per queue and per key, concurrency caps, pause, defaults,
statistics and retention — against a real coordinator driven by the fake clock."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

S = 1_000_000


async def set_queue(stub: rpc.CoordinatorServiceStub, queue: pb.Queue, *paths: str) -> pb.Queue:
    reply: pb.Queue = await stub.UpdateQueue(
        pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=list(paths)))
    )
    return reply


async def fill(
    stub: rpc.CoordinatorServiceStub, count: int, queue: str = "api", **spec: object
) -> None:
    for start in range(0, count, 1000):
        batch = [
            pb.JobSpec(queue=queue, task_type="call", **spec)  # type: ignore[arg-type]
            for _ in range(min(1000, count - start))
        ]
        await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=batch))


async def lease(
    stub: rpc.CoordinatorServiceStub, queue: str = "api", max_jobs: int = 1000
) -> list[pb.LeasedJob]:
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=[queue], max_jobs=max_jobs))
    return list(reply.jobs)


async def test_a_queue_exists_once_updated_before_any_job(stub: rpc.CoordinatorServiceStub) -> None:
    await set_queue(stub, pb.Queue(name="fresh", max_concurrency=3), "max_concurrency")
    queue = await stub.GetQueue(pb.GetQueueRequest(name="fresh"))
    assert queue.max_concurrency == 3


async def test_a_never_named_queue_has_default_settings_and_zero_stats(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    queue = await stub.GetQueue(pb.GetQueueRequest(name="never-named"))
    assert queue.name == "never-named"
    assert not queue.paused and queue.max_concurrency == 0
    assert queue.stats == pb.QueueStats()
    # Looking does not create it.
    listed = await stub.ListQueues(pb.ListQueuesRequest())
    assert "never-named" not in [q.name for q in listed.queues]


async def test_get_queue_still_refuses_a_malformed_name(stub: rpc.CoordinatorServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetQueue(pb.GetQueueRequest(name="no spaces"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bucket_starts_full_then_refills_at_its_rate(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await set_queue(
        stub, pb.Queue(name="api", rate_limit=pb.RateLimit(rate=100, burst=20)), "rate_limit"
    )
    await fill(stub, 500)
    assert len(await lease(stub)) == 20
    assert len(await lease(stub)) == 0
    clock.advance(0.1)
    assert len(await lease(stub)) == 10
    clock.advance(10)
    assert len(await lease(stub)) == 20  # refills no further than the burst


async def test_no_one_second_window_exceeds_rate_plus_burst(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await set_queue(
        stub, pb.Queue(name="api", rate_limit=pb.RateLimit(rate=100, burst=20)), "rate_limit"
    )
    await fill(stub, 7000)
    counts: list[int] = []  # jobs dispatched by a lease every 25 ms, for 60 s
    for _ in range(2400):
        counts.append(len(await lease(stub, max_jobs=50)))
        clock.advance(0.025)
    assert abs(sum(counts) - (6000 + 20)) <= 0.02 * 6000
    worst = max(sum(counts[i : i + 40]) for i in range(len(counts) - 39))  # every 1 s window
    assert worst <= 120


async def test_per_key_buckets_throttle_each_key_on_its_own(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_queue(
        stub,
        pb.Queue(name="api", per_key_rate_limit=pb.RateLimit(rate=1, burst=2)),
        "per_key_rate_limit",
    )
    await fill(stub, 10, throttle_key="shop-a")
    await fill(stub, 10, throttle_key="shop-b")
    await fill(stub, 3)  # no key: not throttled by key
    leased = await lease(stub)
    by_key: dict[str, int] = {}
    for job in leased:
        got = await stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
        by_key[got.throttle_key] = by_key.get(got.throttle_key, 0) + 1
    assert by_key == {"shop-a": 2, "shop-b": 2, "": 3}


async def test_concurrency_cap_bounds_leased_jobs_and_a_receipt_frees_a_slot(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_queue(stub, pb.Queue(name="api", max_concurrency=3), "max_concurrency")
    await fill(stub, 10)
    first = await lease(stub)
    assert len(first) == 3
    assert await lease(stub) == []
    await stub.Receipt(
        pb.ReceiptRequest(
            job_id=first[0].job_id, lease_token=first[0].lease_token, outcome=pb.OUTCOME_SUCCESS
        )
    )
    assert len(await lease(stub)) == 1


async def test_a_long_poll_wakes_when_a_slot_frees(stub: rpc.CoordinatorServiceStub) -> None:
    await set_queue(stub, pb.Queue(name="api", max_concurrency=1), "max_concurrency")
    await fill(stub, 2)
    [held] = await lease(stub)
    waiting = asyncio.ensure_future(
        stub.Lease(
            pb.LeaseRequest(worker_id="w2", queues=["api"], max_jobs=1, wait=Duration(seconds=10))
        )
    )
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await stub.Receipt(
        pb.ReceiptRequest(
            job_id=held.job_id, lease_token=held.lease_token, outcome=pb.OUTCOME_SUCCESS
        )
    )
    reply = await waiting
    assert len(reply.jobs) == 1 and time.monotonic() - started < 2


async def test_raising_a_rate_limit_wakes_a_long_poll_on_an_empty_bucket(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    slow = pb.RateLimit(rate=0.001, burst=1)  # the next token is 1,000 s away
    await set_queue(stub, pb.Queue(name="api", rate_limit=slow), "rate_limit")
    await fill(stub, 2)
    assert len(await lease(stub)) == 1
    waiting = asyncio.ensure_future(
        stub.Lease(
            pb.LeaseRequest(worker_id="w", queues=["api"], max_jobs=1, wait=Duration(seconds=10))
        )
    )
    await asyncio.sleep(0.1)
    fast = pb.RateLimit(rate=100, burst=10)
    await set_queue(stub, pb.Queue(name="api", rate_limit=fast), "rate_limit")
    clock.advance(1)  # the new rate's next token is 10 ms away, not 1,000 s
    assert len((await asyncio.wait_for(waiting, 3)).jobs) == 1


async def test_a_lease_right_after_a_limit_is_raised_sees_the_new_limit(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    slow = pb.RateLimit(rate=0.001, burst=1)
    await set_queue(stub, pb.Queue(name="api", rate_limit=slow), "rate_limit")
    await fill(stub, 2)
    assert len(await lease(stub)) == 1  # took the only token: dry for 1,000 s
    assert await lease(stub) == []
    fast = pb.RateLimit(rate=100, burst=10)
    await set_queue(stub, pb.Queue(name="api", rate_limit=fast), "rate_limit")
    clock.advance(1)
    assert len(await lease(stub)) == 1


async def test_paused_queue_holds_jobs_and_resume_wakes_a_long_poll(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_queue(stub, pb.Queue(name="api", paused=True), "paused")
    await fill(stub, 1)
    assert await lease(stub) == []
    waiting = asyncio.ensure_future(
        stub.Lease(
            pb.LeaseRequest(worker_id="w", queues=["api"], max_jobs=1, wait=Duration(seconds=10))
        )
    )
    await asyncio.sleep(0.1)
    await set_queue(stub, pb.Queue(name="api", paused=False), "paused")
    assert len((await asyncio.wait_for(waiting, 3)).jobs) == 1


async def test_queue_defaults_apply_to_jobs_that_do_not_say(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_queue(
        stub,
        pb.Queue(name="api", max_attempts=3, lease_duration=Duration(seconds=90)),
        "max_attempts",
        "lease_duration",
    )
    await fill(stub, 1)
    await stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="api", task_type="call", max_attempts=7))
    )
    jobs = (await stub.ListJobs(pb.ListJobsRequest(queue="api"))).jobs
    assert sorted(j.max_attempts for j in jobs) == [3, 7]
    assert {j.lease_duration.seconds for j in jobs} == {90}


async def test_stats_count_states_and_say_what_holds_the_queue_back(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await set_queue(stub, pb.Queue(name="api", max_concurrency=2), "max_concurrency")
    await fill(stub, 5)
    await lease(stub)
    clock.advance(3)
    stats = (await stub.GetQueue(pb.GetQueueRequest(name="api"))).stats
    assert (stats.available, stats.leased) == (3, 2)
    assert stats.held_by_concurrency_limit and not stats.held_by_rate_limit
    assert not stats.held_by_pause
    assert stats.oldest_available_age.seconds == 3
    assert stats.dispatch_rate > 0


async def test_invalid_rate_limit_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_queue(
            stub, pb.Queue(name="api", rate_limit=pb.RateLimit(rate=-1, burst=5)), "rate_limit"
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rate_limit.rate" in (caught.value.details() or "")


async def test_unknown_mask_path_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await set_queue(stub, pb.Queue(name="api"), "colour")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_pruner_deletes_finished_jobs_after_retention_only(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await set_queue(
        stub,
        pb.Queue(name="api", retention=pb.RetentionPolicy(succeeded=Duration(seconds=60))),
        "retention",
    )
    await fill(stub, 3)
    leased = await lease(stub, max_jobs=2)
    for job in leased:
        await stub.Receipt(
            pb.ReceiptRequest(
                job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
            )
        )
    clock.advance(59)
    await coordinator.pruner.run_once(clock.now())
    assert len((await stub.ListJobs(pb.ListJobsRequest(queue="api"))).jobs) == 3
    clock.advance(2)
    await coordinator.pruner.run_once(clock.now())
    remaining = (await stub.ListJobs(pb.ListJobsRequest(queue="api"))).jobs
    assert [j.state for j in remaining] == [pb.JOB_STATE_AVAILABLE]


async def test_idempotency_key_holds_while_its_job_exists(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    spec = pb.JobSpec(queue="api", task_type="call", idempotency_key="order-1")
    first = await stub.Enqueue(pb.EnqueueRequest(job=spec))
    [job] = await lease(stub)
    await stub.Receipt(
        pb.ReceiptRequest(
            job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
        )
    )
    clock.advance(3600)
    await coordinator.pruner.run_once(clock.now())
    again = await stub.Enqueue(pb.EnqueueRequest(job=spec))
    assert (again.job_id, again.deduplicated) == (first.job_id, True)
