"""The HTTP API's place in the coordinator: off unless --http-listen is given, refused start
on a taken port, long-polls served in the coordinator's loop."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import httpx
import pytest
from conveyor_server.cli import _config, build_parser
from conveyor_server.config import ConfigError, ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator


def test_serve_has_no_http_api_unless_http_listen_is_given() -> None:
    config = _config(build_parser().parse_args(["serve"]))

    assert config.http_listen is None


def test_serve_http_listen_flag_sets_the_address() -> None:
    args = build_parser().parse_args(["serve", "--http-listen", "127.0.0.1:8080"])

    assert _config(args).http_listen == "127.0.0.1:8080"


def test_a_non_loopback_http_listen_needs_insecure() -> None:
    refused = ["serve", "--http-listen", "0.0.0.0:8080"]
    with pytest.raises(ConfigError, match=r"--http-listen 0\.0\.0\.0:8080 is reachable"):
        _config(build_parser().parse_args(refused))

    assert _config(build_parser().parse_args([*refused, "--insecure"])).insecure


def test_http_listen_with_auth_is_accepted_since_http_checks_tokens() -> None:
    args = build_parser().parse_args(["serve", "--auth", "--http-listen", "127.0.0.1:8080"])
    config = _config(args)
    assert config.auth and config.http_listen == "127.0.0.1:8080"


def test_http_listen_without_a_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--http-listen must be host:port"):
        ServerConfig(http_listen="localhost")


async def test_coordinator_without_http_listen_has_no_http_address(
    coordinator: Coordinator,
) -> None:
    assert coordinator.http_address is None


async def test_http_port_in_use_refuses_to_start_and_releases_the_store(
    server_config: ServerConfig, clock: FakeClock
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = dataclasses.replace(server_config, http_listen=f"127.0.0.1:{port}")

        with pytest.raises(OSError, match="cannot listen for HTTP"):
            await Coordinator.start(config, clock=clock)

    # The SQLite lock was released: a coordinator can start on the same file.
    again = await Coordinator.start(server_config, clock=clock)
    await again.stop(grace=1.0)


async def test_lease_long_poll_returns_a_job_enqueued_meanwhile(http: httpx.AsyncClient) -> None:
    lease = asyncio.create_task(
        http.post("/v1/leases", json={"worker_id": "w", "queues": ["mail"], "wait": "20s"})
    )
    await http.post("/v1/jobs", json={"queue": "mail", "task_type": "send"})

    reply = await lease

    assert [job["queue"] for job in reply.json()["jobs"]] == ["mail"]
