"""Secret hygiene: a real `conveyor serve --auth --log-level info` process runs a full job
life (a retried failure with a checkpoint, a success, a job failed for good, refused calls)
with a unique canary in every token, payload, result and checkpoint; the canary never
appears in the coordinator's log nor in any error message it returns. (Error messages a
handler reports are stored and shown by design, so they carry no canary.)"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conveyor import Client, JobContext, NonRetryableError, Retry, Worker
from conveyor.errors import ConveyorError
from conveyor_server.core.auth import parse_roles
from conveyor_server.store.tokens import TokenStore
from grpc_health.v1 import health_pb2, health_pb2_grpc

CANARY = "canary" + secrets.token_hex(8)
READY_SECONDS = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serving(address: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while loop.time() < deadline:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"coordinator at {address} not serving")


class Served:
    def __init__(self, address: str, log: Path, tokens: dict[str, str]) -> None:
        self.address, self.log, self.tokens = address, log, tokens


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    db = f"sqlite:///{tmp_path / 'conveyor.db'}"
    store = TokenStore(db)
    store.migrate()
    tokens = {
        role: store.create(f"{role}-{CANARY}", "default", parse_roles([role]), ())
        for role in ("producer", "worker", "admin")
    }
    store.close()
    address, log = f"127.0.0.1:{_free_port()}", tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_server",
            "serve",
            "--db",
            db,
            "--listen",
            address,
            "--auth",
            "--log-level",
            "info",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=stderr,
        )
    try:
        await _serving(address)
        yield Served(address, log, tokens)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


def _worker(served: Served) -> Worker:
    worker = Worker(served.address, ["canary"], token=served.tokens["worker"], concurrency=2)

    @worker.task("echo")
    async def echo(job: JobContext) -> bytes:
        if job.checkpoint is None:
            job.save_checkpoint(f"checkpoint-{CANARY}")
            raise Retry("first attempt fails on purpose", after=0)
        assert job.checkpoint == f"checkpoint-{CANARY}".encode()
        return f"result-{CANARY}".encode()

    @worker.task("doomed")
    async def doomed(job: JobContext) -> bytes:
        raise NonRetryableError("this job fails for good")

    return worker


async def _refusals(served: Served) -> list[str]:
    """Error messages of calls that carry the canary where they should not be."""
    messages = []
    forged = "cvy_" + (CANARY * 4)[:43]
    async with Client(served.address, token=forged, timeout=10) as stranger:
        with pytest.raises(ConveyorError) as refused:
            await stranger.enqueue("canary", "echo", f"payload-{CANARY}")
        messages.append(str(refused.value))
    async with Client(served.address, token=served.tokens["producer"], timeout=10) as producer:
        with pytest.raises(ConveyorError) as too_big:
            await producer.enqueue("canary", "echo", f"payload-{CANARY}" * 100_000)
        messages.append(str(too_big.value))
        with pytest.raises(ConveyorError) as denied:
            await producer.list_jobs("canary")
        messages.append(str(denied.value))
    return messages


async def test_canary_never_reaches_logs_or_error_messages(served: Served) -> None:
    worker = _worker(served)
    running = asyncio.create_task(worker.run())
    try:
        async with Client(served.address, token=served.tokens["producer"], timeout=10) as client:
            echo = await client.enqueue("canary", "echo", f"payload-{CANARY}", max_attempts=3)
            doomed = await client.enqueue("canary", "doomed", f"payload-{CANARY}")
            result = await client.wait_for_result(echo.job_id, timeout=60)
            assert result == f"result-{CANARY}".encode()
            final = await client.wait_job(doomed.job_id, timeout=60)
            assert final.state.is_terminal
        async with Client(served.address, token=served.tokens["admin"], timeout=10) as admin:
            await admin.list_jobs("canary", full=True)
        messages = await _refusals(served)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 20)
    for message in messages:
        assert CANARY not in message
    log = served.log.read_text()
    assert "job." in log  # the info-level transitions were logged
    assert CANARY not in log
