"""An acknowledged enqueue survives SIGKILL of the coordinator (synchronous=FULL, the default)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

_PRODUCERS = 8
_KILL_AFTER_ACKS = 300


def _spec(payload: str) -> pb.JobSpec:
    return pb.JobSpec(queue="durable", task_type="t", payload=payload.encode())


async def _produce(
    stub: rpc.CoordinatorServiceStub, producer: int, acked: list[str], enough: asyncio.Event
) -> None:
    """Enqueues until the coordinator dies, keeping every id it acknowledged."""
    n = 0
    while True:
        n += 1
        try:
            if n % 10 == 0:
                batch = await stub.EnqueueBatch(
                    pb.EnqueueBatchRequest(jobs=[_spec(f"{producer}-{n}-{i}") for i in range(20)]),
                    timeout=5,
                )
                acked.extend(result.job_id for result in batch.results)
            else:
                reply = await stub.Enqueue(
                    pb.EnqueueRequest(job=_spec(f"{producer}-{n}")),
                    timeout=5,
                )
                acked.append(reply.job_id)
        except grpc.aio.AioRpcError:
            return  # the coordinator is gone: this call was never acknowledged
        if len(acked) >= _KILL_AFTER_ACKS:
            enough.set()


async def test_every_acknowledged_enqueue_survives_sigkill(start_server: Any) -> None:
    server = await start_server()
    acked: list[str] = []
    enough = asyncio.Event()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        producers = [
            asyncio.create_task(_produce(stub, p, acked, enough)) for p in range(_PRODUCERS)
        ]
        await asyncio.wait_for(enough.wait(), timeout=60)
        # Killed while producers still have calls in flight: those are not acknowledged.
        server.signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*producers), timeout=30)
    assert await server.exit_code() == -signal.SIGKILL

    restarted = await start_server()
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        missing = []
        for job_id in acked:
            try:
                job = await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=5)
                assert job.state == pb.JOB_STATE_AVAILABLE
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
                missing.append(job_id)
    assert len(acked) >= _KILL_AFTER_ACKS
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged jobs lost"
