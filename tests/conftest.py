"""Shared fixtures: a real coordinator on a loopback port over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        db_url=f"sqlite:///{tmp_path / 'conveyor.db'}",
        listen="127.0.0.1:0",
        log_level="warning",
        # Commits still reach the OS before a reply (a killed process loses nothing), but are
        # not fsynced each: the suite stays fast. The SIGKILL test runs with the default FULL.
        sqlite_synchronous="NORMAL",
    )


@pytest.fixture
async def coordinator(server_config: ServerConfig, clock: FakeClock) -> AsyncIterator[Coordinator]:
    """A coordinator driven by the fake clock; its background loops still run."""
    coord = await Coordinator.start(server_config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def channel(coordinator: Coordinator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(coordinator.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> rpc.CoordinatorServiceStub:
    return rpc.CoordinatorServiceStub(channel)
