"""Issue 11, item 3: a producer's W3C traceparent (gRPC metadata on Enqueue) is stored with the
job and handed to the worker in every LeasedJob, so that one trace runs from the enqueue
through every attempt. A malformed one is ignored: tracing never makes an enqueue fail."""

from __future__ import annotations

import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _enqueue(stub: rpc.CoordinatorServiceStub, queue: str, traceparent: str) -> str:
    job = pb.JobSpec(queue=queue, task_type="t", lease_duration=Duration(seconds=5))
    reply = await stub.Enqueue(pb.EnqueueRequest(job=job), metadata=(("traceparent", traceparent),))
    return reply.job_id


async def test_every_attempt_carries_the_producers_traceparent(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    job_id = await _enqueue(stub, "traced", TRACEPARENT)
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).traceparent == TRACEPARENT
    first = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["traced"]))).jobs[0]
    assert first.traceparent == TRACEPARENT
    await stub.Receipt(
        pb.ReceiptRequest(job_id=job_id, lease_token=first.lease_token, outcome=pb.OUTCOME_RELEASE)
    )
    second = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["traced"]))).jobs[0]
    assert second.traceparent == TRACEPARENT


async def test_a_batch_shares_the_calls_traceparent(stub: rpc.CoordinatorServiceStub) -> None:
    jobs = [pb.JobSpec(queue="traced-batch", task_type="t") for _ in range(2)]
    reply = await stub.EnqueueBatch(
        pb.EnqueueBatchRequest(jobs=jobs), metadata=(("traceparent", TRACEPARENT),)
    )
    for result in reply.results:
        job = await stub.GetJob(pb.GetJobRequest(job_id=result.job_id))
        assert job.traceparent == TRACEPARENT


@pytest.mark.parametrize(
    "malformed",
    [
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        TRACEPARENT + "-extra",  # version 00 has exactly four fields
    ],
)
async def test_a_malformed_traceparent_is_ignored(
    stub: rpc.CoordinatorServiceStub, malformed: str
) -> None:
    job_id = await _enqueue(stub, "untraced", malformed)
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).traceparent == ""


async def test_a_later_version_keeps_its_first_four_fields(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    later = "01" + TRACEPARENT[2:] + "-what-comes-next"
    job_id = await _enqueue(stub, "later", later)
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).traceparent == later[:55]
