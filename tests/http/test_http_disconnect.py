"""A client that disconnects while its call runs cancels the servicer call, as a cancelled
gRPC call does: a long-polling Lease stops (handing back what it was claiming)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conveyor_server.api.http.app import HttpApi


class ParkedLease:
    """A servicer whose Lease waits until it is cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def Lease(self, request: Any, context: Any) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_disconnect_during_a_long_poll_cancels_it_and_sends_nothing() -> None:
    servicer = ParkedLease()
    body = json.dumps({"worker_id": "w", "queues": ["mail"], "wait": "30s"}).encode()
    events = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await servicer.started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/leases",
        "raw_path": b"/v1/leases",
        "query_string": b"",
        "headers": [],
    }
    await HttpApi(servicer, 1024)(scope, receive, send)  # type: ignore[arg-type]

    assert servicer.cancelled.is_set()
    assert sent == []
