"""Limits per principal: long-polls open at once and enqueue rate, answered with
RESOURCE_EXHAUSTED and google.rpc.RetryInfo."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from auth_support import bearer
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.api.limits import Exhausted, PrincipalLimits, PrincipalLimitsConfig
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import parse_roles
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.store.tokens import TokenStore
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def test_a_long_poll_past_the_principals_limit_is_refused_with_a_delay() -> None:
    limits = PrincipalLimits(PrincipalLimitsConfig(max_long_polls=2))
    held = (limits.long_poll("a"), limits.long_poll("a"))
    with held[0], held[1], pytest.raises(Exhausted) as refused, limits.long_poll("a"):
        pass
    assert refused.value.retry_after > 0


def test_another_principal_keeps_its_own_long_polls() -> None:
    limits = PrincipalLimits(PrincipalLimitsConfig(max_long_polls=1))
    with limits.long_poll("a"), limits.long_poll("b"):
        pass


def test_a_finished_long_poll_frees_its_slot() -> None:
    limits = PrincipalLimits(PrincipalLimitsConfig(max_long_polls=1))
    with limits.long_poll("a"):
        pass
    with limits.long_poll("a"):
        pass


def test_enqueue_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limits = PrincipalLimits(
        PrincipalLimitsConfig(enqueue_rate=10, enqueue_burst=5), monotonic=lambda: now[0]
    )
    limits.take_enqueue("a", 5)
    with pytest.raises(Exhausted) as refused:
        limits.take_enqueue("a", 1)
    assert refused.value.retry_after == pytest.approx(0.1)
    now[0] += 0.1
    limits.take_enqueue("a", 1)


@pytest.fixture
async def slow_coordinator(
    server_config: ServerConfig, clock: FakeClock
) -> AsyncIterator[Coordinator]:
    config = dataclasses.replace(server_config, auth=True, enqueue_rate=0.001, enqueue_burst=2)
    coord = await Coordinator.start(config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


async def test_enqueue_past_the_rate_is_resource_exhausted_with_retry_info(
    slow_coordinator: Coordinator,
) -> None:
    store = TokenStore(slow_coordinator.config.db_url)
    token = store.create("busy", "default", parse_roles(["producer"]), ())
    store.close()
    request = pb.EnqueueRequest(job=pb.JobSpec(queue="q", task_type="t"))
    async with grpc.aio.insecure_channel(slow_coordinator.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        for _ in range(2):
            await stub.Enqueue(request, metadata=bearer(token), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Enqueue(request, metadata=bearer(token), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.ToTimedelta().total_seconds() > 0
