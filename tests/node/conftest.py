"""Node SDK end-to-end fixtures: a real coordinator on a loopback port, on real time (as in
tests/sdk/conftest.py), and Node worker processes talking to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from conveyor_server.main import Coordinator
from node_support import WORKER_SCRIPT, NodeWorker, SpawnNode, StartNodeWorker


@pytest.fixture
async def spawn_node() -> AsyncIterator[SpawnNode]:
    """Starts `node ARGS...` with its stdout piped; kills any still running at the end."""
    started: list[NodeWorker] = []

    async def spawn(*args: str, env: dict[str, str] | None = None) -> NodeWorker:
        process = await asyncio.create_subprocess_exec(
            "node", *args, stdout=asyncio.subprocess.PIPE, env=env
        )
        worker = NodeWorker(process)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()


@pytest.fixture
async def start_node_worker(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> StartNodeWorker:
    """Starts tests/node/worker_script.mjs on the coordinator, once it is ready."""

    async def start(concurrency: int = 4, shutdown_grace_ms: int = 1000) -> NodeWorker:
        worker = await spawn_node(
            str(WORKER_SCRIPT),
            live_coordinator.address,
            str(concurrency),
            str(shutdown_grace_ms),
        )
        await worker.event("ready")
        return worker

    return start
