"""The coordinator as users run it: `python -m conveyor_server serve` in its own process, so
tests can kill it with real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

_READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    address: str

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 20.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)


async def _wait_until_serving(address: str, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READY_TIMEOUT
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"coordinator exited early with code {process.returncode}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"coordinator at {address} not serving after {_READY_TIMEOUT}s")
            await asyncio.sleep(0.05)


StartServer = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Starts `conveyor serve` on a free loopback port over tmp_path/conveyor.db (default
    settings: synchronous=FULL); kills whatever is still running at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(
        *extra: str, port: int | None = None, log_file: Path | None = None
    ) -> ServerProcess:
        address = f"127.0.0.1:{port or free_port()}"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_server",
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'conveyor.db'}",
            "--listen",
            address,
            "--log-level",
            "warning",
            *extra,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=log_file.open("w") if log_file is not None else None,
        )
        started.append(process)
        await _wait_until_serving(address, process)
        return ServerProcess(process, address)

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()
