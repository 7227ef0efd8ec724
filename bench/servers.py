"""A coordinator (`conveyor serve`) in its own process, for the benchmarks: started on a free
port, waited for until its health check reports SERVING, stopped. The scripts import it as
`servers` (Python puts a script's own folder, bench/, first on the path)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# How long to wait between health checks while a coordinator starts.
_RETRY_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Coordinator:
    """`conveyor serve --db DB --listen ADDRESS FLAGS...`; its log goes to /dev/null."""

    def __init__(self, db: str, *flags: str, log_level: str = "warning") -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "conveyor_server", "serve", "--db", db),
                *("--listen", self.address, "--log-level", log_level, *flags),
            ],
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(
        self, within_s: float = 10.0, channel: grpc.aio.Channel | None = None
    ) -> None:
        """Returns once the coordinator is SERVING; RuntimeError after about `within_s`.
        `channel`: one to it that the caller goes on using (so its connection is made before
        anything is timed); by default one of its own, closed after."""
        if channel is None:
            async with grpc.aio.insecure_channel(self.address) as own:
                return await self.wait_ready(within_s, own)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(round(within_s / _RETRY_S)):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(_RETRY_S)
        raise RuntimeError("coordinator did not start")

    def stop(self, timeout_s: float = 30.0) -> None:
        self.process.terminate()
        self.process.wait(timeout=timeout_s)
