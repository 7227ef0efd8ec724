"""A Lease whose caller gives up after the claim committed never strands a job: what the
coordinator claimed for a call whose reply the caller did not receive goes back to AVAILABLE
without losing an attempt (issue 8, item 1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.api import convert
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.model import LeasedJob
from conveyor_server.main import Coordinator
from server_wire import seconds

QUEUE = "cancelled-leases"
# How long the hook below holds the coordinator's loop after a client cancels, so that the
# cancel crosses the loopback connection before the reply is sent. 1 ms is enough on an idle
# machine; 20 ms was not always enough on a loaded one (gRPC's own threads need the CPU to carry
# the cancel), so the hold is generous and the number of calls modest.
_CANCEL_IN_FLIGHT_SECONDS = 0.1
_CALLS = 60


def _cancel_each_call_after_its_claim(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch, calls: dict[str, Any]
) -> None:
    """Puts every client's cancel where a real one strands jobs: after the claim committed,
    while the reply is built and sent. (Cancelled 0-8 ms after sending, as in the issue, a
    cancel lands there only a few times in a hundred.)"""
    real_lease = coordinator.jobs.lease
    claimed_for: list[str] = []

    async def lease(worker_id: str, *args: Any, **kwargs: Any) -> list[LeasedJob]:
        leased = await real_lease(worker_id, *args, **kwargs)
        claimed_for.append(worker_id)  # the reply is built next, with no await in between
        return leased

    real_convert: Callable[[LeasedJob], pb.LeasedJob] = convert.leased_job

    def leased_job(job: LeasedJob) -> pb.LeasedJob:
        calls[claimed_for[-1]].cancel()
        time.sleep(_CANCEL_IN_FLIGHT_SECONDS)  # holds the loop: the cancel is on its way
        return real_convert(job)

    monkeypatch.setattr(coordinator.jobs, "lease", lease)
    monkeypatch.setattr(convert, "leased_job", leased_job)


async def _jobs_after_restart(config: ServerConfig, clock: FakeClock) -> list[pb.Job]:
    """Every job, as a new coordinator on the same database file finds it."""
    again = await Coordinator.start(config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            reply = await rpc.CoordinatorServiceStub(channel).ListJobs(
                pb.ListJobsRequest(queue=QUEUE, page_size=1000)
            )
        return list(reply.jobs)
    finally:
        await again.stop(grace=1.0)


async def test_leases_cancelled_after_their_claim_strand_no_job(
    coordinator: Coordinator,
    stub: rpc.CoordinatorServiceStub,
    server_config: ServerConfig,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = pb.JobSpec(queue=QUEUE, task_type="t", max_attempts=1, lease_duration=seconds(2))
    await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[spec] * 300))
    calls: dict[str, Any] = {}
    _cancel_each_call_after_its_claim(coordinator, monkeypatch, calls)

    async def lease_and_cancel(worker: str) -> list[str]:
        request = pb.LeaseRequest(worker_id=worker, queues=[QUEUE], max_jobs=1, wait=seconds(20))
        calls[worker] = call = stub.Lease(request)
        try:
            reply = await call
        except asyncio.CancelledError:
            return []
        return [job.job_id for job in reply.jobs]

    replies = await asyncio.gather(*(lease_and_cancel(f"worker-{i}") for i in range(_CALLS)))
    # Stopping waits for every call and every hand-back. The clock has not moved, so no lease
    # has expired: what is LEASED now is exactly what expiry would fail (max_attempts=1).
    await coordinator.stop(grace=10.0)

    jobs = await _jobs_after_restart(server_config, clock)
    received = {job_id for reply in replies for job_id in reply}
    assert {job.job_id for job in jobs if job.state == pb.JOB_STATE_LEASED} == received
    others = [job for job in jobs if job.job_id not in received]
    assert len(others) == 300 - len(received)
    assert {(job.state, job.attempt) for job in others} == {(pb.JOB_STATE_AVAILABLE, 0)}


async def test_a_long_poll_returns_empty_before_the_callers_deadline(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    request = pb.LeaseRequest(worker_id="w", queues=[QUEUE], max_jobs=1, wait=seconds(20))
    reply = await stub.Lease(request, timeout=1.0)
    assert list(reply.jobs) == []
