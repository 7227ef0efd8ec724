"""`conveyor serve --http-listen` as users run it: its own process, reached over HTTP only,
stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

READY_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until_answering(
    client: httpx.AsyncClient, process: asyncio.subprocess.Process
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    while True:
        assert process.returncode is None, f"serve exited early with {process.returncode}"
        try:
            if (await client.get("/v1/server-info")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert loop.time() < deadline, f"no HTTP answer within {READY_SECONDS}s"
        await asyncio.sleep(0.05)


async def test_serve_with_http_listen_enqueues_over_http_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    http_address = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_server",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'conveyor.db'}",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        http_address,
        "--log-level",
        "warning",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://{http_address}") as client:
            await wait_until_answering(client, process)
            enqueued = await client.post("/v1/jobs", json={"queue": "q", "task_type": "t"})
            job = await client.get(f"/v1/jobs/{enqueued.json()['job_id']}")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert job.json()["state"] == "JOB_STATE_AVAILABLE"
    assert f"HTTP/JSON API listening on http://{http_address}" in stderr.decode()
    assert process.returncode == 0
