"""Helpers for the wire-contract specs in tests/server: thin wrappers that build raw
conveyor.v1 messages (never the SDK) and send them to a real coordinator."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

S = 1_000_000  # microseconds per second: the FakeClock's unit
QUEUE = "work"
TASK = "task"
WORKER = "worker-1"


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromMicroseconds(round(value * S))
    return duration


def at(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def micros(stamp: Timestamp | Duration) -> int:
    return stamp.ToMicroseconds()


async def refused(call: Awaitable[Any], code: grpc.StatusCode) -> str:
    """Awaits a call that must fail with `code`; returns the status message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


class Wire:
    """One raw stub plus the few calls every spec repeats."""

    def __init__(self, stub: rpc.CoordinatorServiceStub) -> None:
        self.stub = stub

    async def enqueue(
        self, queue: str = QUEUE, task_type: str = TASK, payload: bytes = b"", **spec: Any
    ) -> pb.EnqueueResponse:
        job = pb.JobSpec(queue=queue, task_type=task_type, payload=payload, **spec)
        reply: pb.EnqueueResponse = await self.stub.Enqueue(pb.EnqueueRequest(job=job))
        return reply

    async def lease(
        self,
        queue: str = QUEUE,
        max_jobs: int = 1,
        worker_id: str = WORKER,
        wait: Duration | None = None,
    ) -> list[pb.LeasedJob]:
        request = pb.LeaseRequest(worker_id=worker_id, queues=[queue], max_jobs=max_jobs)
        if wait is not None:
            request.wait.CopyFrom(wait)
        reply: pb.LeaseResponse = await self.stub.Lease(request)
        return list(reply.jobs)

    async def lease_one(self, queue: str = QUEUE, worker_id: str = WORKER) -> pb.LeasedJob:
        leased = await self.lease(queue, 1, worker_id)
        assert len(leased) == 1, f"expected one due job in {queue!r}, got {len(leased)}"
        return leased[0]

    async def get(self, job_id: str) -> pb.Job:
        job: pb.Job = await self.stub.GetJob(pb.GetJobRequest(job_id=job_id))
        return job

    async def jobs(self, queue: str = "", state: int = pb.JOB_STATE_UNSPECIFIED) -> list[pb.Job]:
        """Every matching job in full, newest first (pages of large jobs are cut by size)."""
        found: list[pb.Job] = []
        token = ""
        while True:
            reply: pb.ListJobsResponse = await self.stub.ListJobs(
                pb.ListJobsRequest(
                    queue=queue,
                    state=state,  # type: ignore[arg-type]
                    page_size=1000,
                    page_token=token,
                    view=pb.JOB_VIEW_FULL,
                )
            )
            found.extend(reply.jobs)
            token = reply.next_page_token
            if not token:
                return found

    async def receipt(
        self, job: pb.LeasedJob, outcome: int, token: str | None = None, **fields: Any
    ) -> pb.ReceiptResponse:
        reply: pb.ReceiptResponse = await self.stub.Receipt(
            pb.ReceiptRequest(
                job_id=job.job_id,
                lease_token=job.lease_token if token is None else token,
                outcome=outcome,  # type: ignore[arg-type]
                **fields,
            )
        )
        return reply

    async def succeed(self, job: pb.LeasedJob, result: bytes = b"") -> pb.ReceiptResponse:
        return await self.receipt(job, pb.OUTCOME_SUCCESS, result=result)

    async def fail(
        self, job: pb.LeasedJob, message: str = "boom", non_retryable: bool = False, **fields: Any
    ) -> pb.ReceiptResponse:
        error = pb.JobError(message=message, type="Boom", non_retryable=non_retryable)
        return await self.receipt(job, pb.OUTCOME_FAILURE, error=error, **fields)

    async def heartbeat(
        self, job: pb.LeasedJob, token: str | None = None, **fields: Any
    ) -> pb.HeartbeatResponse:
        reply: pb.HeartbeatResponse = await self.stub.Heartbeat(
            pb.HeartbeatRequest(
                job_id=job.job_id,
                lease_token=job.lease_token if token is None else token,
                **fields,
            )
        )
        return reply
