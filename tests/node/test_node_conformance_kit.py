"""The Node.js SDK's conformance worker passes `conveyor conformance`, run for real: the kit
starts its own coordinator and the worker program as `node sdk/node/conformance/worker.mjs`."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from pathlib import Path

from conveyor.cli import _CONFORMANCE_SCENARIOS
from node_support import CONFORMANCE_WORKER, require_node

require_node()

_EXECUTABLE = shutil.which("conveyor", path=str(Path(sys.executable).parent))
COMMAND = [_EXECUTABLE] if _EXECUTABLE else [sys.executable, "-m", "conveyor_server"]


async def test_the_node_worker_passes_every_scenario_of_the_kit() -> None:
    node = shutil.which("node")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "conformance",
        "--worker-cmd",
        f"{shlex.quote(node)} {shlex.quote(str(CONFORMANCE_WORKER))}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    output = stdout.decode()
    verdicts = {
        line.split()[0]: line.split()[1]
        for line in output.splitlines()
        if line.split()[:1] and line.split()[0] in _CONFORMANCE_SCENARIOS
    }
    assert process.returncode == 0, output
    assert verdicts == dict.fromkeys(_CONFORMANCE_SCENARIOS, "pass"), output
