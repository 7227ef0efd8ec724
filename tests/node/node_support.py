"""Helpers for the Node SDK tests: the paths, and a running Node worker process."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SDK_NODE = HERE.parent.parent / "sdk" / "node"
WORKER_SCRIPT = HERE / "worker_script.mjs"
CLIENT_SCRIPT = HERE / "client_script.mjs"
VERSIONS_WORKER = HERE / "versions_worker.mjs"
CONTRACTS_SCRIPT = HERE / "contracts_script.mjs"
ADMIN_CLIENT_SCRIPT = HERE / "admin_client_script.mjs"
CONFORMANCE_WORKER = SDK_NODE / "conformance" / "worker.mjs"


def require_node() -> None:
    """Skips the calling test module where the Node SDK cannot run."""
    if shutil.which("node") is None:
        pytest.skip(
            "node is not on PATH: the Node SDK tests need Node 20+", allow_module_level=True
        )
    if not (SDK_NODE / "node_modules").is_dir():
        pytest.skip(
            "sdk/node/node_modules is missing: run `npm install` in sdk/node",
            allow_module_level=True,
        )


class NodeWorker:
    """A running Node program (`node worker_script.mjs`, say) and the JSON events it prints,
    one per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def event(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event called `name`, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                assert self.process.stdout is not None
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"the worker exited before printing {name!r}")
                event: dict[str, Any] = json.loads(line)
                if event["event"] == name:
                    return event

    async def events_until(self, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every event before the next one called `name` (which is read, not returned)."""
        events = []
        async with asyncio.timeout(timeout):
            while (event := await self.event_any())["event"] != name:
                events.append(event)
        return events

    async def event_any(self) -> dict[str, Any]:
        """The next event, whatever it is."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise AssertionError("the worker exited before printing another event")
        event: dict[str, Any] = json.loads(line)
        return event

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float = 10.0) -> tuple[dict[str, Any], int]:
        """SIGTERM; then the final `stopped` event and the exit code."""
        self.terminate()
        return await self.stopped(timeout)

    async def stopped(self, timeout: float = 10.0) -> tuple[dict[str, Any], int]:
        """The final `stopped` event and the exit code, once the worker shut down."""
        stopped = await self.event("stopped", timeout)
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        return stopped, code


SpawnNode = Callable[..., Awaitable[NodeWorker]]
StartNodeWorker = Callable[..., Awaitable[NodeWorker]]
