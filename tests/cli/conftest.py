"""CLI fixtures: a real coordinator on a loopback port (real time, real SQLite), a client
for checking what commands did, and `conveyor` for running the real executable against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cli_support import Conveyor, Result, run_cli
from conveyor import Client, Worker
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import SystemClock
from conveyor_server.main import Coordinator


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
def conveyor(live_coordinator: Coordinator) -> Conveyor:
    """Runs `conveyor ARGS... --address <the test coordinator>` and returns its Result."""

    async def run(*args: str, stdin: bytes | None = None) -> Result:
        return await run_cli(*args, "--address", live_coordinator.address, stdin=stdin)

    return run


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Worker], asyncio.Task[None]]]:
    """Starts `worker.run()` in a task; stops it (and waits) at the end of the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(worker: Worker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        started.append((worker, task))
        return task

    yield start
    for worker, task in started:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
