"""examples/email-pipeline end to end: a real coordinator, the example's Python worker and
Node.js worker as real processes, and the demo's own code enqueuing the three sample emails.

The contracts are generated into a temporary directory (the example reads $EMAIL_PIPELINE_GEN),
so the test leaves the checkout as it was."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest
from conveyor import Client, InvalidArgument, JobState
from conveyor_server.main import Coordinator

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "email-pipeline"

if shutil.which("node") is None:
    pytest.skip("node is not on PATH: the email pipeline needs Node 20+", allow_module_level=True)
if not (EXAMPLE / "node" / "node_modules").is_dir():
    pytest.skip(
        "examples/email-pipeline/node/node_modules is missing: run "
        "`npm ci --prefix sdk/node && npm ci --prefix examples/email-pipeline/node`",
        allow_module_level=True,
    )

# Which worker must run each task type: the worker ids start with these.
LANGUAGE_OF = {
    "parse_email": "python-steps-",
    "scan_attachment": "python-steps-",
    "score_spam": "python-steps-",
    "analyze_text": "node-steps-",
    "check_links": "node-steps-",
}


async def run(*command: str, env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=EXAMPLE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{output.decode()}"


async def stop(processes: list[asyncio.subprocess.Process]) -> list[int]:
    """SIGTERM to each worker still running; their exit codes once they all shut down."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        return [await process.wait() for process in processes]


@pytest.fixture
async def demo(
    tmp_path: Path, live_coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """run_demo.py, imported after generate.sh made the contracts in a temporary directory."""
    gen = tmp_path / "gen"
    monkeypatch.setenv("EMAIL_PIPELINE_GEN", str(gen))
    monkeypatch.setenv("CONVEYOR_ADDRESS", live_coordinator.address)
    await run("./generate.sh", str(gen), env={**os.environ, "PYTHON": sys.executable})
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("run_demo")


@pytest.fixture
async def workers(
    demo: ModuleType, tmp_path: Path
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """The example's two workers, as its README starts them; stopped with SIGTERM at the end
    (their logs are printed, which pytest shows when the test failed)."""
    logs: list[tuple[str, IO[bytes]]] = []
    processes: list[asyncio.subprocess.Process] = []
    for name, command in (
        ("python", [sys.executable, "python_steps.py"]),
        ("node", ["node", "node/steps.mjs"]),
    ):
        log = (tmp_path / f"{name}.log").open("w+b")
        logs.append((name, log))
        processes.append(
            await asyncio.create_subprocess_exec(
                *command, cwd=EXAMPLE, env=dict(os.environ), stdout=log, stderr=log
            )
        )
    try:
        yield processes
    finally:
        with contextlib.suppress(TimeoutError):
            await stop(processes)
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for name, log in logs:
            log.seek(0)
            print(f"--- {name} worker log\n{log.read().decode(errors='replace')}")
            log.close()


async def test_pipeline_flags_the_phishing_mail_and_passes_the_newsletter(
    demo: ModuleType, workers: list[asyncio.subprocess.Process], client: Client
) -> None:
    await demo.register_contracts(client)
    # The contracts are in force: the strict queue refuses a job that names no version, and
    # a payload that is not the registered message.
    with pytest.raises(InvalidArgument, match="strict"):
        await client.enqueue(demo.QUEUE, "analyze_text", b"free text")
    with pytest.raises(InvalidArgument, match=r"pipeline\.v1\.AnalyzeText"):
        await client.enqueue(demo.QUEUE, "analyze_text", b"\xff\xff", task_version="1.0.0")
    samples = {path.stem: path.read_bytes() for path in demo.SAMPLES}
    assert set(samples) == {"newsletter", "phishing", "macro_invoice"}

    async with asyncio.timeout(20):
        verdicts = await asyncio.gather(
            *(demo.run_pipeline(client, email_id, raw) for email_id, raw in samples.items())
        )
    by_email = {v.email_id: v for v in verdicts}
    print(demo.table(verdicts))

    assert by_email["phishing"].spam
    assert by_email["phishing"].score > 0.9
    reasons = "\n".join(by_email["phishing"].reasons)
    for expected in ("IP address", "double extension .pdf.exe", "ALL-CAPS", "lure phrases"):
        assert expected in reasons
    assert not by_email["newsletter"].spam
    assert by_email["newsletter"].score < 0.2
    assert by_email["macro_invoice"].spam
    assert any("macro-enabled" in r for r in by_email["macro_invoice"].reasons)

    # Every step ran in its language, on the contract version its message declares.
    jobs = [await client.get_job(job.job_id) async for job in client.iter_jobs(demo.QUEUE)]
    counts: dict[str, int] = {}
    for job in jobs:
        assert job.state == JobState.SUCCEEDED, job
        assert job.task_version == "1.0.0"
        assert job.leased_by.startswith(LANGUAGE_OF[job.task_type]), (job.task_type, job.leased_by)
        counts[job.task_type] = counts.get(job.task_type, 0) + 1
    # Three emails, all with links; attachments on two of them.
    assert counts == {
        "parse_email": 3,
        "analyze_text": 3,
        "check_links": 3,
        "scan_attachment": 2,
        "score_spam": 3,
    }

    # Both shut down gracefully on SIGTERM, as `conveyor worker` and Ctrl-C would have them.
    assert await stop(workers) == [0, 0]
