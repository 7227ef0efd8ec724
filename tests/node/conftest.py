"""Node SDK end-to-end fixtures: a real coordinator on a loopback port, on real time (as in
tests/sdk/conftest.py), and Node worker processes talking to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conveyor import Client
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import SystemClock
from conveyor_server.main import Coordinator
from node_support import WORKER_SCRIPT, NodeWorker, StartNodeWorker


@pytest.fixture
async def live_coordinator(tmp_path: Path) -> AsyncIterator[Coordinator]:
    config = ServerConfig(
        db_url=f"sqlite:///{tmp_path / 'conveyor.db'}",
        listen="127.0.0.1:0",
        log_level="warning",
        sqlite_synchronous="NORMAL",
    )
    coord = await Coordinator.start(config, clock=SystemClock())
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def client(live_coordinator: Coordinator) -> AsyncIterator[Client]:
    async with Client(live_coordinator.address) as c:
        yield c


@pytest.fixture
async def start_node_worker(
    live_coordinator: Coordinator,
) -> AsyncIterator[StartNodeWorker]:
    """Starts Node workers on the coordinator; kills any still running at the end."""
    started: list[NodeWorker] = []

    async def start(concurrency: int = 4, shutdown_grace_ms: int = 1000) -> NodeWorker:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(WORKER_SCRIPT),
            live_coordinator.address,
            str(concurrency),
            str(shutdown_grace_ms),
            stdout=asyncio.subprocess.PIPE,
        )
        worker = NodeWorker(process)
        started.append(worker)
        await worker.event("ready")
        return worker

    yield start
    for worker in started:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
