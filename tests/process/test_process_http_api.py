"""`conveyor serve --http-listen` as users run it: its own process, reached over HTTP only,
stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from conftest import StartServer, free_port

READY_SECONDS = 20.0


async def wait_until_answering(client: httpx.AsyncClient) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    while True:
        try:
            if (await client.get("/v1/server-info")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert loop.time() < deadline, f"no HTTP answer within {READY_SECONDS}s"
        await asyncio.sleep(0.05)


async def test_serve_with_http_listen_enqueues_over_http_and_stops_on_sigterm(
    start_server: StartServer, tmp_path: Path
) -> None:
    http_address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    server = await start_server("--http-listen", http_address, log_file=log)
    async with httpx.AsyncClient(base_url=f"http://{http_address}") as client:
        await wait_until_answering(client)
        enqueued = await client.post("/v1/jobs", json={"queue": "q", "task_type": "t"})
        job = await client.get(f"/v1/jobs/{enqueued.json()['job_id']}")
    server.signal(signal.SIGTERM)

    assert await server.exit_code() == 0
    assert job.json()["state"] == "JOB_STATE_AVAILABLE"
    assert f"HTTP/JSON API listening on http://{http_address}" in log.read_text()
