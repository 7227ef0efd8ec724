"""A small in-process HTTP server (uvicorn) for the metrics endpoint and the dashboard: it
runs on the coordinator's event loop and leaves signal handling to the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The coordinator owns SIGTERM/SIGINT (serve_until_signalled) and stops this server.
        yield


class HttpServer:
    def __init__(self, app: ASGIApp, listen: str, name: str) -> None:
        host, port = listen.rsplit(":", 1)
        self.name = name
        self._server = _QuietServer(
            uvicorn.Config(
                app,
                host=host.strip("[]"),
                port=int(port),
                log_level="warning",
                # Leave logging to conveyor_server.logs (no dictConfig of uvicorn's own).
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self.address = listen

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise OSError(f"cannot listen on {self.address} ({self.name})")
            await asyncio.sleep(0.01)
        [server] = self._server.servers
        host, port = server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
