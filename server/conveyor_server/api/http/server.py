"""Serves the HTTP API with uvicorn inside the coordinator's event loop, so each request calls
the servicer directly (no thread hop, no second process). uvicorn's own serve() is not used:
it installs SIGINT/SIGTERM handlers, and the coordinator owns shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

from conveyor_server.api.http.app import HttpApi

# h11 refuses a request line or headers past this many bytes before the app sees them; at
# 64 KiB, a 20,000-character path value still reaches validation and gets its JSON error.
MAX_HEAD_BYTES = 64 * 1024


class HttpServer:
    def __init__(self, app: HttpApi, listen: str, grace_seconds: float) -> None:
        host, port = listen.rsplit(":", 1)
        self._config = uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            http="h11",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self._server = uvicorn.Server(self._config)
        self._main: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []
        self.address = listen

    async def start(self) -> None:
        """Listens, or raises OSError naming the address and the reason."""
        host, port = self._config.host, self._config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listener = socket.create_server((host, port), family=family)
        except OSError as error:
            raise OSError(f"cannot listen for HTTP on {self.address}: {error.strerror}") from error
        self._sockets = [listener]
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        with contextlib.suppress(SystemExit):  # uvicorn exits where it cannot serve
            await self._server.startup(sockets=self._sockets)
        if not self._server.started:
            listener.close()
            raise OSError(f"cannot serve HTTP on {self.address}")
        bound_host, bound_port = listener.getsockname()[:2]
        self.address = (
            f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{host}:{bound_port}"
        )
        self._main = asyncio.create_task(self._server.main_loop())

    async def stop(self, grace_seconds: float) -> None:
        """Stops listening, lets requests in flight finish for up to grace_seconds (at least
        one: uvicorn counts whole seconds), then cancels them. Safe to call twice."""
        if self._main is None:
            return
        self._config.timeout_graceful_shutdown = max(1, round(grace_seconds))
        self._server.should_exit = True
        await self._main
        self._main = None
        await self._server.shutdown(sockets=self._sockets)
