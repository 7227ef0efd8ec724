"""Fixtures of the dashboard specs: the shared coordinator with its dashboard on, and an HTTP
client that keeps the dashboard's CSRF cookie."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from conveyor_server.config import ServerConfig
from conveyor_server.main import Coordinator


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, dashboard_listen="127.0.0.1:0")


@pytest.fixture
async def http(coordinator: Coordinator) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://{coordinator.http_addresses()['dashboard']}"
    async with httpx.AsyncClient(base_url=base) as client:
        yield client
