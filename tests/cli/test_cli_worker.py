"""`conveyor worker MODULE:ATTR`: a worker module written to tmp_path, run from there."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cli_support import finish, run_cli, start_cli
from conveyor import Client
from conveyor_server.main import Coordinator

WORKER_MODULE = """
from conveyor import Worker

worker = Worker(queues=["cli"], concurrency=2, shutdown_grace=1.0)
not_a_worker = 42


@worker.task("echo")
async def echo(job):
    return b"echo:" + job.payload
"""


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    (tmp_path / "tests_module.py").write_text(WORKER_MODULE)
    return tmp_path


async def test_worker_processes_jobs_and_stops_cleanly_on_sigterm(
    live_coordinator: Coordinator, client: Client, worker_dir: Path
) -> None:
    process = await start_cli(
        "worker", "tests_module:worker", "--address", live_coordinator.address, cwd=worker_dir
    )
    try:
        job = await client.enqueue("cli", "echo", b"hi")
        assert await client.wait_for_result(job.job_id, timeout=10) == b"echo:hi"
    finally:
        process.send_signal(signal.SIGTERM)
        result = await finish(process)
    assert result.code == 0, result.stderr
    assert "stopped" in result.stderr


async def test_worker_with_a_missing_module_exits_2(worker_dir: Path) -> None:
    result = await run_cli("worker", "nosuchmodule:worker", cwd=worker_dir)
    assert result.code == 2
    assert result.stderr.startswith("error: cannot import module 'nosuchmodule'")
    assert "Traceback" not in result.stderr


async def test_worker_with_a_missing_attribute_exits_2(worker_dir: Path) -> None:
    result = await run_cli("worker", "tests_module:nope", cwd=worker_dir)
    assert result.code == 2
    assert "has no attribute 'nope'" in result.stderr


async def test_worker_whose_attribute_is_not_a_worker_exits_2(worker_dir: Path) -> None:
    result = await run_cli("worker", "tests_module:not_a_worker", cwd=worker_dir)
    assert result.code == 2
    assert "not a conveyor.Worker" in result.stderr
