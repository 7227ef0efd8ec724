"""SDK end-to-end fixtures: a real coordinator on a loopback port, on real time.

The shared fixtures in tests/conftest.py drive the coordinator with a fake clock; a worker's
heartbeats, lease long-polls and retry delays run on real time, so these tests use the
system clock instead."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import pytest
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


RunWorker = Callable[[Worker], Awaitable[asyncio.Task[None]]]


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


_REPO = Path(__file__).resolve().parents[2]
_TEST_PROTOS = _REPO / "tests" / "contracts" / "protos"


@pytest.fixture(scope="session")
def email_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """acme/email/v1/email.proto compiled for this session (generated test code is never
    committed), imported from a temporary directory put on sys.path."""
    out = tmp_path_factory.mktemp("contracts-gen")
    # Only the test's own file is generated: its import of conveyor/v1/task.proto resolves
    # to the SDK's committed conveyor.v1.task_pb2, so both share one descriptor pool entry.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{_TEST_PROTOS}",
            f"-I{_REPO / 'protos'}",
            f"--python_out={out}",
            str(_TEST_PROTOS / "acme" / "email" / "v1" / "email.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("acme.email.v1.email_pb2")
    finally:
        sys.path.remove(str(out))
