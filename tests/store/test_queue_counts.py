"""Issue 11, item 1: queue statistics come from maintained counts (store/counts.py), not from
counting rows, and those counts are exact. After random sequences of every transition
(enqueue with and without keys and delays, leases, heartbeats, every receipt outcome,
cancels, retries, lease expiry, promotion, schedule fires, pruning), GetQueue and the
counts table agree with a real COUNT(*) of the jobs."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import JobState
from conveyor_server.main import Coordinator
from conveyor_server.store import counts
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy.engine import Connection
from store_support import execute, new_job, query, store_of

QUEUES = ("counted-a", "counted-b")
TYPES = ("t1", "t2")
STATS_FIELDS = {
    JobState.SCHEDULED: "scheduled",
    JobState.AVAILABLE: "available",
    JobState.LEASED: "leased",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


class Model:
    """Drives the coordinator with random operations; remembers the leases it holds."""

    def __init__(
        self, coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
    ) -> None:
        self.coordinator, self.stub, self.clock = coordinator, stub, clock
        self.leases: dict[str, str] = {}
        self.job_ids: list[str] = []

    async def enqueue(self, rng: random.Random) -> None:
        spec = pb.JobSpec(
            queue=rng.choice(QUEUES),
            task_type=rng.choice(TYPES),
            payload=b"p",
            priority=rng.choice((0, 0, 5, -3)),
            max_attempts=rng.choice((1, 2, 3)),
            lease_duration=Duration(seconds=10),
            retry_policy=pb.RetryPolicy(initial_backoff=Duration(seconds=1)),
        )
        if rng.random() < 0.3:
            spec.idempotency_key = f"key-{rng.randrange(5)}"
        if rng.random() < 0.25:
            spec.delay.FromSeconds(rng.choice((5, 30)))
        try:
            reply = await self.stub.Enqueue(pb.EnqueueRequest(job=spec))
        except grpc.aio.AioRpcError as err:  # the same key with another type or payload
            assert err.code() == grpc.StatusCode.ALREADY_EXISTS
            return
        self.job_ids.append(reply.job_id)

    async def lease(self, rng: random.Random) -> None:
        reply = await self.stub.Lease(
            pb.LeaseRequest(worker_id="w", queues=list(QUEUES), max_jobs=rng.randint(1, 4))
        )
        self.leases.update({job.job_id: job.lease_token for job in reply.jobs})

    async def settle(self, rng: random.Random) -> None:
        if not self.leases:
            return
        job_id = rng.choice(sorted(self.leases))
        token = self.leases.pop(job_id)
        request = pb.ReceiptRequest(job_id=job_id, lease_token=token)
        kind = rng.choice(("success", "retry", "fatal", "release", "heartbeat"))
        if kind == "heartbeat":
            self.leases[job_id] = token
            await self._tolerate(self.stub.Heartbeat(pb.HeartbeatRequest(**_lease(job_id, token))))
            return
        if kind == "success":
            request.outcome = pb.OUTCOME_SUCCESS
        elif kind == "release":
            request.outcome = pb.OUTCOME_RELEASE
        else:
            request.outcome = pb.OUTCOME_FAILURE
            request.error.CopyFrom(pb.JobError(message="boom", non_retryable=kind == "fatal"))
        await self._tolerate(self.stub.Receipt(request))

    async def cancel_or_retry(self, rng: random.Random) -> None:
        if not self.job_ids:
            return
        job_id = rng.choice(self.job_ids)
        if rng.random() < 0.5:
            await self._tolerate(self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id)))
        else:
            await self._tolerate(self.stub.RetryJob(pb.RetryJobRequest(job_id=job_id)))

    async def time_passes(self, rng: random.Random) -> None:
        self.clock.advance(rng.choice((2, 15, 61)))
        now = self.clock.now()
        await self.coordinator.reaper.run_once(now)
        await self.coordinator.waker.run_once(now)
        await self.coordinator.cron.run_once(now)
        await self.coordinator.pruner.run_once(now)

    async def _tolerate(self, call: Any) -> None:
        """Lost leases, finished jobs and pruned ones refuse; that is part of the model."""
        try:
            await call
        except grpc.aio.AioRpcError as err:
            assert err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def _lease(job_id: str, token: str) -> dict[str, str]:
    return {"job_id": job_id, "lease_token": token}


async def _real_counts(coordinator: Coordinator) -> Counter[tuple[str, str, int]]:
    rows = await query(
        store_of(coordinator),
        "SELECT queue, task_type, state, COUNT(*) AS n FROM jobs GROUP BY queue, task_type, state",
    )
    return Counter({(r.queue, r.task_type, int(r.state)): int(r.n) for r in rows})


async def _kept_counts(coordinator: Coordinator) -> Counter[tuple[str, str, int]]:
    rows = await query(store_of(coordinator), "SELECT queue, task_type, state, n FROM queue_counts")
    return Counter({(r.queue, r.task_type, int(r.state)): int(r.n) for r in rows if r.n})


async def _assert_exact(coordinator: Coordinator, stub: rpc.CoordinatorServiceStub) -> set[int]:
    """Checks the counts and returns the states jobs are in."""
    real = await _real_counts(coordinator)
    assert await _kept_counts(coordinator) == real
    for queue in QUEUES:
        stats = (await stub.GetQueue(pb.GetQueueRequest(name=queue))).stats
        for state, field in STATS_FIELDS.items():
            expected = sum(n for (q, _t, s), n in real.items() if q == queue and s == state)
            assert getattr(stats, field) == expected, (queue, field)
    return {s for (_q, _t, s), n in real.items() if n}


async def _prepare(stub: rpc.CoordinatorServiceStub) -> None:
    """Short retention on one queue (so the pruner deletes) and a schedule firing into the
    other every minute."""
    retention = pb.RetentionPolicy(
        succeeded=Duration(seconds=30), failed=Duration(seconds=30), cancelled=Duration(seconds=30)
    )
    await stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name=QUEUES[0], retention=retention),
            update_mask=FieldMask(paths=["retention"]),
        )
    )
    await stub.CreateSchedule(
        pb.CreateScheduleRequest(
            schedule=pb.Schedule(
                name="counted-every-minute",
                cron="* * * * *",
                job=pb.JobSpec(queue=QUEUES[1], task_type=TYPES[0], payload=b"p"),
            )
        )
    )


@pytest.mark.parametrize("seed", [1, 2])
async def test_counts_stay_exact_through_random_transitions(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock, seed: int
) -> None:
    await _prepare(stub)
    model = Model(coordinator, stub, clock)
    rng = random.Random(seed)
    steps = (model.enqueue, model.lease, model.settle, model.cancel_or_retry, model.time_passes)
    weights = (5, 3, 4, 2, 1)
    seen: set[int] = set()
    for step in range(150):
        await rng.choices(steps, weights)[0](rng)
        if step % 10 == 9:
            seen |= await _assert_exact(coordinator, stub)
    # The run really went through the transitions it is meant to check.
    assert seen == set(STATS_FIELDS)


async def test_an_atomic_batch_that_is_refused_leaves_the_counts_unchanged(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    store = store_of(coordinator)
    first = pb.JobSpec(queue=QUEUES[0], task_type=TYPES[0], payload=b"a", idempotency_key="k")
    await stub.Enqueue(pb.EnqueueRequest(job=first))
    now = clock.now()
    # The first job is stored, then the second's key clashes and the batch is undone.
    jobs_ = [
        new_job(QUEUES[0], now, task_type=TYPES[1], payload=b"c"),
        new_job(QUEUES[0], now, task_type=TYPES[0], payload=b"b", idempotency_key="k"),
    ]
    with pytest.raises(Exception, match="no job of the batch was stored"):
        await store.enqueue(jobs_, atomic=True, max_depth=10)
    await _assert_exact(coordinator, stub)


async def test_counts_changed_behind_the_store_are_rebuilt_by_a_recount(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    store = store_of(coordinator)
    for _ in range(3):
        await stub.Enqueue(
            pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUES[0], task_type=TYPES[0], payload=b""))
        )
    await execute(store, "UPDATE queue_counts SET n = n + 40")
    await execute(store, "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs LIMIT 1)")

    def repair(conn: Connection) -> int:
        return counts.recount(conn)

    assert await store._write(repair) == 1
    await _assert_exact(coordinator, stub)
    assert (await stub.GetQueue(pb.GetQueueRequest(name=QUEUES[0]))).stats.available == 2


async def test_serve_with_recount_queues_repairs_counts_at_start(
    server_config: ServerConfig, clock: FakeClock
) -> None:
    first = await Coordinator.start(server_config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            for _ in range(3):
                job = pb.JobSpec(queue=QUEUES[0], task_type=TYPES[0], payload=b"")
                await stub.Enqueue(pb.EnqueueRequest(job=job))
        await execute(store_of(first), "UPDATE queue_counts SET n = 1000")
    finally:
        await first.stop(grace=1.0)
    second = await Coordinator.start(
        dataclasses.replace(server_config, recount_queues=True), clock=clock
    )
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            await _assert_exact(second, stub)
            assert (await stub.GetQueue(pb.GetQueueRequest(name=QUEUES[0]))).stats.available == 3
    finally:
        await second.stop(grace=1.0)
