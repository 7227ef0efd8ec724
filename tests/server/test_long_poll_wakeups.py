"""Long-polls are woken about as many as there is new work, and a woken long-poll that cannot
use its wake-up passes it on (issue 7, item 6: no thundering herd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.model import LeaseBatch, LeaseParams
from conveyor_server.main import Coordinator
from server_wire import seconds

QUEUE = "herd"


class Claims:
    """Counts the store's claims (one write transaction each) and knows when none is under
    way and no long-poll holds a wake-up it has not acted on."""

    def __init__(self, coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.in_flight = 0
        self._coordinator = coordinator
        real = coordinator._store.lease

        async def lease(params: LeaseParams) -> LeaseBatch:
            self.count += 1
            self.in_flight += 1
            try:
                return await real(params)
            finally:
                self.in_flight -= 1

        monkeypatch.setattr(coordinator._store, "lease", lease)

    def _quiet(self, sleeping: int) -> bool:
        waiters = self._coordinator.jobs._wakeups._waiters.get(QUEUE, {})
        return (
            self.in_flight == 0
            and len(waiters) == sleeping
            and not any(w.event.is_set() for w in waiters)
        )

    async def settle(self, sleeping: int) -> None:
        """Until `sleeping` long-polls sleep on the queue and nothing else happens (there is
        no event for 'nothing happens': looked at every 10 ms, for at most 10 s)."""
        for _ in range(1000):
            if self._quiet(sleeping):
                await asyncio.sleep(0.01)
                if self._quiet(sleeping):
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"not settled: {self.in_flight} claims under way")


@pytest.fixture
def claims(coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch) -> Claims:
    return Claims(coordinator, monkeypatch)


@pytest.fixture
async def long_polls(stub: rpc.CoordinatorServiceStub) -> AsyncIterator[list[Any]]:
    """Lease calls started by a test; whatever still waits is cancelled at its end."""
    calls: list[Any] = []
    yield calls
    for call in calls:
        call.cancel()


def _long_poll(
    stub: rpc.CoordinatorServiceStub, worker: str, refs: tuple[tuple[str, str], ...] = ()
) -> Any:
    return stub.Lease(
        pb.LeaseRequest(
            worker_id=worker,
            queues=[QUEUE],
            max_jobs=1,
            wait=seconds(30),
            task_types=[pb.TaskTypeRef(name=name, version=version) for name, version in refs],
        )
    )


async def test_one_enqueue_to_200_idle_long_polls_costs_a_few_claims(
    stub: rpc.CoordinatorServiceStub, claims: Claims, long_polls: list[Any]
) -> None:
    long_polls.extend(_long_poll(stub, f"worker-{i}") for i in range(200))
    await claims.settle(sleeping=200)
    before = claims.count

    job = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="t")))
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(_reply(call)) for call in long_polls],
        return_when=asyncio.FIRST_COMPLETED,
    )
    await claims.settle(sleeping=199)

    assert [[j.job_id for j in task.result().jobs] for task in done] == [[job.job_id]]
    # The woken long-poll's claim, and one more because it filled up (max_jobs=1): more work
    # might have been waiting.
    assert claims.count - before <= 3


async def _reply(call: Any) -> pb.LeaseResponse:
    reply: pb.LeaseResponse = await call
    return reply


async def test_n_jobs_enqueued_to_n_idle_long_polls_are_all_leased(
    stub: rpc.CoordinatorServiceStub, claims: Claims, long_polls: list[Any]
) -> None:
    long_polls.extend(_long_poll(stub, f"worker-{i}") for i in range(50))
    await claims.settle(sleeping=50)

    spec = pb.JobSpec(queue=QUEUE, task_type="t")
    enqueued = await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[spec] * 50))
    replies = await asyncio.gather(*long_polls)

    leased = sorted(job.job_id for reply in replies for job in reply.jobs)
    assert leased == sorted(result.job_id for result in enqueued.results)


async def test_a_woken_long_poll_that_cannot_take_the_job_passes_its_wake_up_on(
    stub: rpc.CoordinatorServiceStub, claims: Claims, long_polls: list[Any]
) -> None:
    # The oldest sleeper runs the job's type, but only an older major version of it.
    old = _long_poll(stub, "old-worker", (("report", "1.0.0"),))
    long_polls.append(old)
    await claims.settle(sleeping=1)
    new = _long_poll(stub, "new-worker", (("report", "2.0.0"),))
    long_polls.append(new)
    await claims.settle(sleeping=2)

    job = await stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="report", task_version="2.0.0"))
    )
    reply = await new

    assert [j.job_id for j in reply.jobs] == [job.job_id]
    assert not old.done()


async def test_wait_job_reads_its_job_at_start_and_end_not_every_second(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="t")))
    reads = 0
    real = coordinator._store.get_job

    async def get_job(job_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await real(job_id)

    monkeypatch.setattr(coordinator._store, "get_job", get_job)
    waited = await stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id, timeout=seconds(2.5)))

    assert waited.state == pb.JOB_STATE_AVAILABLE
    assert reads == 2  # JobFinished says when it ends; it did not, so: first look, last look
