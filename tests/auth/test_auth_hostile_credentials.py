"""Malformed credentials are UNAUTHENTICATED, never INTERNAL or UNKNOWN, and the refusal never
quotes what was sent."""

from __future__ import annotations

import grpc
import pytest
from auth_support import MakeToken, bearer
from conveyor_server.store.tokens import TokenStore

SECRET = "cvy_" + "S3cr3tCanaryValue-" * 2 + "abcdefg"  # well formed, unknown


async def _refusal(channel: grpc.aio.Channel, metadata: list[tuple[str, str | bytes]]) -> str:
    stub = channel.unary_unary(
        "/conveyor.v1.CoordinatorService/GetServerInfo",
        request_serializer=lambda m: m,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub(b"", metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return refused.value.details() or ""


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param([("authorization", "Bearer " + "x" * 4000)], id="huge-token"),
        pytest.param([("authorization", "Bearer cvy_" + "A" * 3000)], id="huge-token-of-our-shape"),
        pytest.param([("authorization-bin", b"\x00\xff" * 100)], id="binary-header-only"),
        pytest.param([("authorization", "Basic dXNlcjpwYXNz")], id="wrong-scheme"),
        pytest.param([("authorization", "Bearer")], id="scheme-without-token"),
        pytest.param([("authorization", "")], id="empty-header"),
        pytest.param([("authorization", "Bearer ../../etc/passwd")], id="path-like-token"),
        pytest.param([("authorization", f"Bearer {SECRET}")] * 50, id="many-headers"),
        pytest.param([("authorization", f"Bearer {SECRET}")], id="unknown-token"),
        pytest.param([("x-token", SECRET)], id="wrong-header-name"),
    ],
)
async def test_malformed_credentials_are_unauthenticated(
    auth_channel: grpc.aio.Channel, metadata: list[tuple[str, str | bytes]]
) -> None:
    message = await _refusal(auth_channel, metadata)
    assert "S3cr3tCanary" not in message


async def test_two_headers_with_one_valid_token_are_unauthenticated(
    auth_channel: grpc.aio.Channel, make_token: MakeToken
) -> None:
    token = make_token("someone", "admin")
    message = await _refusal(auth_channel, bearer(token) + bearer(SECRET))
    assert token not in message


async def test_a_deleted_principals_token_is_unauthenticated(
    auth_channel: grpc.aio.Channel, make_token: MakeToken, token_store: TokenStore
) -> None:
    token = make_token("gone", "admin")
    token_store.revoke("gone")
    make_token("gone", "admin")  # the name comes back with a new token; the old one is dead
    # A token never looked up before its deletion is refused at once (nothing cached).
    message = await _refusal(auth_channel, bearer(token))
    assert token not in message
