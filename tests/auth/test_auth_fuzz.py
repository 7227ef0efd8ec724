"""The request fuzz of tests/fuzz with auth on: requests drawn from every RPC's descriptor,
sent with a token of each role (and a queue-limited one), never end INTERNAL, UNKNOWN or
UNAVAILABLE, and every refusal is UNAUTHENTICATED or PERMISSION_DENIED, never a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import parse_roles
from conveyor_server.store.tokens import TokenStore
from fuzz.test_fuzz_requests import (
    CALL_TIMEOUT,
    FORBIDDEN,
    FUZZ_SETTINGS,
    LONGEST_MESSAGE,
    SERVICE,
    _Server,
    _without_long_waits,
    messages,
)
from google.protobuf.message import Message
from hypothesis import given, settings

EXAMPLES_PER_RPC = 30
ROLES = {
    "producer": (["producer"], ()),
    "worker": (["worker"], ()),
    "admin": (["admin"], ()),
    "limited": (["producer", "worker"], ("work", "team-*")),
}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    path: Path = tmp_path_factory.mktemp("auth-fuzz") / "conveyor.db"
    config = ServerConfig(
        db_url=f"sqlite:///{path}",
        listen="127.0.0.1:0",
        log_level="error",
        sqlite_synchronous="NORMAL",
        auth=True,
        # Limits are not what this fuzz is about; tests/auth/test_auth_limits covers them.
        enqueue_rate=0,
        max_long_polls=0,
    )
    server = _Server(config)
    store = TokenStore(config.db_url)
    tokens = {
        name: store.create(name, "default", parse_roles(roles), queues)
        for name, (roles, queues) in ROLES.items()
    }
    store.close()
    try:
        yield server.coordinator.address, tokens
    finally:
        server.stop()


def _send(channel: grpc.Channel, method: str, request: Message, token: str) -> None:
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")
    data = _without_long_waits(request).SerializePartialToString()
    try:
        call(data, timeout=CALL_TIMEOUT, metadata=[("authorization", f"Bearer {token}")])
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
        assert code not in FORBIDDEN, f"{method}: {code.name} {details[:500]}"
        assert code != grpc.StatusCode.UNAUTHENTICATED, f"{method}: a valid token refused"
        assert len(details) <= LONGEST_MESSAGE, f"{method}: {len(details)}-char message"


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_fuzzed_requests_with_a_token_never_end_internal(
    auth_server: tuple[str, dict[str, str]], method: str, role: str
) -> None:
    address, tokens = auth_server
    with grpc.insecure_channel(address) as channel:

        @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_RPC)
        @given(request=messages(SERVICE.methods_by_name[method].input_type))
        def fuzz(request: Message) -> None:
            _send(channel, method, request, tokens[role])

        fuzz()
