"""Coordinators with `--auth` on a real SQLite file, and tokens made straight in its database."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence

import grpc
import pytest
from auth_support import MakeToken
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import parse_roles
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.store.tokens import TokenStore


@pytest.fixture
def auth_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, auth=True)


@pytest.fixture
async def auth_coordinator(
    auth_config: ServerConfig, clock: FakeClock
) -> AsyncIterator[Coordinator]:
    coord = await Coordinator.start(auth_config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
def make_token(auth_coordinator: Coordinator) -> Iterator[MakeToken]:
    """make_token(name, *roles, queues=(), namespace="default") -> the token."""
    store = TokenStore(auth_coordinator.config.db_url)

    def make(name: str, *roles: str, queues: Sequence[str] = (), namespace: str = "default") -> str:
        return store.create(name, namespace, parse_roles(roles), tuple(queues))

    yield make
    store.close()


@pytest.fixture
def token_store(auth_coordinator: Coordinator) -> Iterator[TokenStore]:
    store = TokenStore(auth_coordinator.config.db_url)
    yield store
    store.close()


@pytest.fixture
async def auth_channel(auth_coordinator: Coordinator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(auth_coordinator.address) as channel:
        yield channel
