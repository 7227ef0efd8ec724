"""`conveyor conformance` run for real: the executable starts its own coordinator and runs
every scenario against the Python SDK's conformance worker (`python -m
conveyor.conformance_worker`). The kit runs once per module; each scenario's line is its own
test, so a failure names the scenario."""

from __future__ import annotations

import asyncio
import os
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
WEAK_WORKER = (
    f"{shlex.quote(sys.executable)} {Path(__file__).parent / 'weak_conformance_worker.py'}"
)
# The whole kit takes about 30 s; the bound is for a stuck run, not a slow one.
KIT_TIMEOUT = 120.0


@dataclass(frozen=True)
class KitRun:
    code: int
    output: str

    def line_of(self, scenario: str) -> str:
        lines = [line for line in self.output.splitlines() if line.split()[:1] == [scenario]]
        assert len(lines) == 1, self.output
        return lines[0]


async def _conformance(*args: str, env: dict[str, str] | None = None) -> KitRun:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "conformance",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env},
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


async def _weak_run(weakness: str, scenario: str) -> KitRun:
    return await _conformance(
        "--worker-cmd",
        WEAK_WORKER,
        "--scenario",
        scenario,
        "--timeout",
        "5",
        env={"WEAKNESS": weakness},
    )


async def test_a_worker_that_polls_instead_of_long_polling_fails_idle_long_poll() -> None:
    run = await _weak_run("polls", "idle-long-poll")

    assert run.code == 1
    assert run.line_of("idle-long-poll").split()[1] == "FAIL"
    assert "long-poll with Lease.wait" in run.output


async def test_a_worker_that_leases_beyond_its_free_slots_fails_concurrency() -> None:
    run = await _weak_run("greedy", "concurrency")

    assert run.code == 1
    assert run.line_of("concurrency").split()[1] == "FAIL"
    assert "ask for free slots only" in run.output


async def test_a_worker_that_reports_a_lost_lease_fails_fencing() -> None:
    run = await _weak_run("reports-lost", "fencing")

    assert run.code == 1
    assert run.line_of("fencing").split()[1] == "FAIL"
    assert "a lost lease must not be reported" in run.output
