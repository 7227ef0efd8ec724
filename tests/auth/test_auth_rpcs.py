"""Every CoordinatorService RPC, enumerated from the service descriptor, is closed without a
token and open exactly to the roles in ALLOWED_ROLES."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from auth_support import METHODS, MakeToken, bearer, call
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.api.auth import ALLOWED_ROLES, QUEUES_OF
from conveyor_server.cli import main
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import PermissionDenied, Principal, Role, check
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.store.tokens import TokenStore
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

ROLES = [r.value for r in Role]


def test_every_rpc_of_the_descriptor_is_in_the_role_table() -> None:
    assert set(ALLOWED_ROLES) == set(METHODS)


def test_queue_checked_rpcs_exist_in_the_descriptor() -> None:
    assert set(QUEUES_OF) <= set(METHODS)


def test_admin_is_allowed_every_rpc_in_the_table() -> None:
    assert all(Role.ADMIN in roles for roles in ALLOWED_ROLES.values())


def test_an_rpc_missing_from_the_table_is_refused_even_to_admin() -> None:
    admin = Principal("root", "default", frozenset(Role))
    with pytest.raises(PermissionDenied):
        check(admin, "SomeNewRpc", (), ALLOWED_ROLES)


@pytest.mark.parametrize("method", METHODS)
async def test_rpc_without_a_token_is_unauthenticated(
    auth_channel: grpc.aio.Channel, method: str
) -> None:
    assert await call(auth_channel, method) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", METHODS)
async def test_rpc_with_an_unknown_token_is_unauthenticated(
    auth_channel: grpc.aio.Channel, method: str
) -> None:
    unknown = "cvy_" + "A" * 43
    assert await call(auth_channel, method, metadata=bearer(unknown)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", METHODS)
async def test_rpc_is_open_exactly_to_its_roles(
    auth_channel: grpc.aio.Channel, make_token: MakeToken, method: str, role: str
) -> None:
    token = make_token(f"{role}-caller", role)
    code = await call(auth_channel, method, metadata=bearer(token))
    if Role(role) in ALLOWED_ROLES[method]:
        # Past the check, the empty request meets validation (or succeeds).
        assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_health_stays_open_without_a_token(auth_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(auth_channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_enqueue_into_a_queue_outside_the_tokens_globs_is_denied(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("team-a", "producer", queues=["team-a-*"])
    request = pb.EnqueueRequest(job=pb.JobSpec(queue="team-b-mail", task_type="send"))
    assert await call(auth_channel, "Enqueue", request, bearer(token)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_enqueue_into_a_queue_matching_the_tokens_globs_is_allowed(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("team-a", "producer", queues=["team-a-*"])
    request = pb.EnqueueRequest(job=pb.JobSpec(queue="team-a-mail", task_type="send"))
    assert await call(auth_channel, "Enqueue", request, bearer(token)) == grpc.StatusCode.OK


async def test_batch_with_one_foreign_queue_is_denied_whole(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("team-a", "producer", queues=["team-a-*"])
    request = pb.EnqueueBatchRequest(
        jobs=[
            pb.JobSpec(queue="team-a-mail", task_type="send"),
            pb.JobSpec(queue="billing", task_type="send"),
        ]
    )
    assert await call(auth_channel, "EnqueueBatch", request, bearer(token)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_lease_from_a_foreign_queue_is_denied(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("mailer", "worker", queues=["mail"])
    request = pb.LeaseRequest(worker_id="w", queues=["mail", "billing"], max_jobs=1)
    assert await call(auth_channel, "Lease", request, bearer(token)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_listing_every_queue_needs_a_glob_matching_every_queue(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("ops-a", "admin", queues=["team-a-*"])
    assert await call(auth_channel, "ListJobs", pb.ListJobsRequest(), bearer(token)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_revoked_token_is_refused(
    auth_channel: grpc.aio.Channel, make_token: MakeToken, token_store: TokenStore
) -> None:
    token = make_token("leaving", "producer")
    assert await call(auth_channel, "GetServerInfo", metadata=bearer(token)) == (grpc.StatusCode.OK)
    assert token_store.revoke("leaving")
    # The coordinator's cache trusts a lookup for at most a second (test_auth_cache proves
    # the bound with a fake clock); here: refused once the cached entry has expired.
    code = grpc.StatusCode.OK
    for _ in range(200):
        code = await call(auth_channel, "GetServerInfo", metadata=bearer(token))
        if code != grpc.StatusCode.OK:
            break
        await asyncio.sleep(0.05)
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
async def closed_health_channel(
    auth_config: ServerConfig, clock: FakeClock
) -> AsyncIterator[grpc.aio.Channel]:
    config = dataclasses.replace(auth_config, auth_health=True)
    coordinator = await Coordinator.start(config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as channel:
            yield channel
    finally:
        await coordinator.stop(grace=1.0)


async def test_closed_health_needs_a_token(closed_health_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(closed_health_channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reflection_needs_a_token(auth_channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(auth_channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in call:
            pass
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_serve_refuses_a_non_loopback_listen_without_tls_and_tokens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--listen", "0.0.0.0:0", "--db", "sqlite:///unused.db"]) == 2
    assert "--insecure" in capsys.readouterr().err
