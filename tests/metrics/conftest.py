"""Fixtures of the metrics specs: the shared coordinator with its metrics endpoint on."""

from __future__ import annotations

import dataclasses

import pytest
from conveyor_server.config import ServerConfig


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, metrics_listen="127.0.0.1:0")
