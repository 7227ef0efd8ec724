"""A Lease whose caller gives up (deadline, cancel) hands back what the store claimed for it."""

from __future__ import annotations

import asyncio

import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator


async def test_lease_cancelled_while_claiming_leaves_the_job_available_without_an_attempt(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    job = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="q", task_type="t")))
    abandoned = asyncio.ensure_future(coordinator.jobs.lease("gone", ["q"], 1, 0.0))
    await asyncio.sleep(0)  # the claim is on its way to the store
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned

    after = await stub.GetJob(pb.GetJobRequest(job_id=job.job_id))
    again = await stub.Lease(pb.LeaseRequest(worker_id="next", queues=["q"], max_jobs=1))
    assert after.state == pb.JOB_STATE_AVAILABLE
    assert [leased.attempt for leased in again.jobs] == [1]
