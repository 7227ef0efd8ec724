"""`conveyor conformance` run for real: the executable starts its own coordinator and runs
every scenario against the Python SDK's conformance worker (`python -m
conveyor.conformance_worker`). The kit runs once per module; each scenario's line is its own
test, so a failure names the scenario."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conveyor.cli import _CONFORMANCE_SCENARIOS

# The venv's own console script; `python -m conveyor_server` is the same entry point.
_EXECUTABLE = shutil.which("conveyor", path=str(Path(sys.executable).parent))
COMMAND = [_EXECUTABLE] if _EXECUTABLE else [sys.executable, "-m", "conveyor_server"]
PYTHON_WORKER = f"{shlex.quote(sys.executable)} -m conveyor.conformance_worker"
# The whole kit takes about 15 s; the bound is for a stuck run, not a slow one.
KIT_TIMEOUT = 90.0


@dataclass(frozen=True)
class KitRun:
    code: int
    output: str

    def line_of(self, scenario: str) -> str:
        lines = [line for line in self.output.splitlines() if line.split()[:1] == [scenario]]
        assert len(lines) == 1, self.output
        return lines[0]


async def _conformance(*args: str) -> KitRun:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "conformance",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), KIT_TIMEOUT)
    assert process.returncode is not None
    return KitRun(process.returncode, stdout.decode())


@pytest.fixture(scope="module")
def python_worker_run() -> KitRun:
    # Sync and module-scoped: the kit runs once (it has no coordinator on the test's loop).
    return asyncio.run(_conformance("--worker-cmd", PYTHON_WORKER))


def test_the_python_worker_passes_the_whole_kit(python_worker_run: KitRun) -> None:
    assert python_worker_run.code == 0, python_worker_run.output


@pytest.mark.parametrize("scenario", _CONFORMANCE_SCENARIOS)
def test_each_scenario_passes_with_the_python_worker(
    python_worker_run: KitRun, scenario: str
) -> None:
    assert python_worker_run.line_of(scenario).split()[1] == "pass", python_worker_run.output


async def test_a_worker_that_never_takes_jobs_fails_and_exits_1() -> None:
    idle = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(60)'"

    run = await _conformance("--worker-cmd", idle, "--scenario", "success", "--timeout", "1")

    assert run.code == 1
    assert run.line_of("success").split()[1] == "FAIL"
