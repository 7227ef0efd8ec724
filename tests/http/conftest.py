"""A real coordinator with its HTTP/JSON API on a loopback port (fake clock), and an httpx
client for it: requests as curl would send them, no SDK."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from http_wire import TEST_MAX_BODY_BYTES


@pytest.fixture
async def http_coordinator(
    server_config: ServerConfig, clock: FakeClock
) -> AsyncIterator[Coordinator]:
    config = dataclasses.replace(
        server_config, http_listen="127.0.0.1:0", http_max_body_bytes=TEST_MAX_BODY_BYTES
    )
    coord = await Coordinator.start(config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def http(http_coordinator: Coordinator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://{http_coordinator.http_address}", timeout=30
    ) as client:
        yield client
