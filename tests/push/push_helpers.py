"""Shared steps of the push tests: set a queue's push target, enqueue, and wait for a job to
reach a state (the pusher settles jobs asynchronously)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask


async def set_push(
    stub: rpc.CoordinatorServiceStub,
    queue: str,
    url: str,
    *,
    secret: str = "",
    timeout_seconds: int = 5,
    max_concurrency: int = 0,
    extra: pb.Queue | None = None,
    paths: tuple[str, ...] = (),
) -> pb.Queue:
    message = pb.Queue(name=queue)
    if extra is not None:
        message.CopyFrom(extra)
        message.name = queue
    message.push.CopyFrom(
        pb.PushTarget(
            url=url,
            timeout=Duration(seconds=timeout_seconds),
            max_concurrency=max_concurrency,
            signing_secret=secret,
        )
    )
    reply: pb.Queue = await stub.UpdateQueue(
        pb.UpdateQueueRequest(queue=message, update_mask=FieldMask(paths=["push", *paths]))
    )
    return reply


async def enqueue(
    stub: rpc.CoordinatorServiceStub, queue: str, payload: bytes = b"{}", **spec: object
) -> str:
    reply = await stub.Enqueue(
        pb.EnqueueRequest(
            job=pb.JobSpec(queue=queue, task_type="hello", payload=payload, **spec)  # type: ignore[arg-type]
        )
    )
    return reply.job_id


async def job_in_state(
    stub: rpc.CoordinatorServiceStub, job_id: str, *states: pb.JobState.ValueType
) -> pb.Job:
    """Polls GetJob until the job is in one of `states` (bounded: 30 s)."""
    return await job_where(stub, job_id, lambda job: job.state in states)


async def job_where(
    stub: rpc.CoordinatorServiceStub, job_id: str, condition: Callable[[pb.Job], bool]
) -> pb.Job:
    """Polls GetJob until `condition` holds for the job (bounded: 30 s)."""
    async with asyncio.timeout(30):
        while True:
            job: pb.Job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
            if condition(job):
                return job
            await asyncio.sleep(0.01)
