"""CLI fixtures: a real coordinator on a loopback port (real time, real SQLite), a client
for checking what commands did, and `conveyor` for running the real executable against it."""

from __future__ import annotations

import pytest
from cli_support import Conveyor, Result, run_cli
from conveyor_server.main import Coordinator


@pytest.fixture
def conveyor(live_coordinator: Coordinator) -> Conveyor:
    """Runs `conveyor ARGS... --address <the test coordinator>` and returns its Result."""

    async def run(*args: str, stdin: bytes | None = None) -> Result:
        return await run_cli(*args, "--address", live_coordinator.address, stdin=stdin)

    return run
