"""Issue 7, item 5 (part): a full disk is RESOURCE_EXHAUSTED, not INTERNAL, and the health
service says NOT_SERVING while the store cannot write and SERVING once it can. SQLite's
max_page_count on the writer's connection makes a full disk without root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from grpc_health.v1 import health_pb2, health_pb2_grpc
from store_support import TASK, store_of

# SQLite-only: PRAGMA max_page_count stands in for a full disk.
pytestmark = pytest.mark.sqlite_only

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BIG = b"x" * 200_000  # needs dozens of new pages


# A guard against hanging, not a timed assertion: the status changes within about a second.
NEXT_STATUS_GUARD_SECONDS = 30.0


async def _statuses(channel: grpc.aio.Channel) -> AsyncIterator[int]:
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    async for reply in stream:
        yield reply.status


async def _next(statuses: AsyncIterator[int]) -> int:
    return await asyncio.wait_for(anext(statuses), NEXT_STATUS_GUARD_SECONDS)


async def _enqueue_big(stub: rpc.CoordinatorServiceStub) -> pb.EnqueueResponse:
    job = pb.JobSpec(queue="work", task_type=TASK, payload=BIG)
    reply: pb.EnqueueResponse = await stub.Enqueue(pb.EnqueueRequest(job=job))
    return reply


async def test_a_full_disk_is_resource_exhausted(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    await store_of(coordinator).set_max_page_count(1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _enqueue_big(stub)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    assert "disk space" in (refused.value.details() or "")


async def test_health_is_not_serving_while_the_disk_is_full_and_serving_after(
    coordinator: Coordinator, channel: grpc.aio.Channel, stub: rpc.CoordinatorServiceStub
) -> None:
    statuses = _statuses(channel)
    assert await _next(statuses) == SERVING
    store = store_of(coordinator)
    await store.set_max_page_count(1)
    with pytest.raises(grpc.aio.AioRpcError):
        await _enqueue_big(stub)
    assert await _next(statuses) == NOT_SERVING
    await store.set_max_page_count(1_000_000)
    assert await _next(statuses) == SERVING
    assert (await _enqueue_big(stub)).job_id
    await statuses.aclose()
