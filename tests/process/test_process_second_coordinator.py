"""Issue 7, item 8: a second `conveyor serve` on the same SQLite file exits non-zero at once,
naming the lock file and the coordinator that holds it; the first keeps serving."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
from conftest import StartServer, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_GUARD_SECONDS = 30.0  # a guard against hanging, not a timed assertion


async def test_a_second_serve_on_the_same_database_exits_naming_the_lock(
    start_server: StartServer, tmp_path: Path
) -> None:
    first = await start_server()
    second = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_server",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'conveyor.db'}",
        "--listen",
        f"127.0.0.1:{free_port()}",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(second.communicate(), EXIT_GUARD_SECONDS)
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    message = stderr.decode()
    assert second.returncode != 0
    assert str(tmp_path / "conveyor.db.lock") in message
    assert f"pid {first.process.pid}, serving on {first.address}" in message
    assert "Traceback" not in message
    async with grpc.aio.insecure_channel(first.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
