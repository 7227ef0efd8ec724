"""PostgreSQL LISTEN/NOTIFY as a wake-up hint between coordinators: a job enqueued through
coordinator A wakes the Lease long-polls waiting on coordinator B at once, instead of at their
next poll. Only a hint: a lost notification (a dropped connection, a restart) costs latency,
never a job, since every long-poll still claims from the database when it wakes or times out.

One thread per coordinator owns one extra connection in autocommit mode, LISTENs on one
channel and hands each payload to the event loop. Behind PgBouncer in transaction mode
LISTEN does not work: point this connection at PostgreSQL itself (the hint is then simply
missing if it cannot, and long-polls fall back to their timeouts)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable

import psycopg
import structlog

log = structlog.get_logger("conveyor.store")

CHANNEL = "conveyor_wakeups"
# NOTIFY payloads are limited to 8000 bytes; queue names to 128 characters.
_QUEUES_PER_MESSAGE = 40
# How long the listener blocks between checks of whether it should stop.
_POLL_SECONDS = 0.5
# After a lost connection, wait this long before connecting again.
_RECONNECT_SECONDS = 1.0


def payloads(holder: str, queues: Iterable[str]) -> list[str]:
    names = sorted(set(queues))
    return [
        json.dumps({"from": holder, "queues": names[i : i + _QUEUES_PER_MESSAGE]})
        for i in range(0, len(names), _QUEUES_PER_MESSAGE)
    ]


class WakeupListener:
    def __init__(
        self,
        conninfo: str,
        holder: str,
        loop: asyncio.AbstractEventLoop,
        on_queues: Callable[[list[str]], None],
    ) -> None:
        self._conninfo = conninfo
        self._holder = holder
        self._loop = loop
        self._on_queues = on_queues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop_payload(self) -> str:
        """A message that ends this listener's wait at once (sent through the writer), so
        that stopping does not wait out the poll."""
        return json.dumps({"from": self._holder, "stop": True})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=_POLL_SECONDS):
                            self._deliver(note.payload)
                            if self._stop.is_set():
                                break
            except Exception as exc:  # the hint is lost for a while; long-polls still time out
                log.warning("store.listener_failed", error=repr(exc)[:200])
                self._stop.wait(_RECONNECT_SECONDS)

    def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            queues = [str(q) for q in message.get("queues", ())]
        except (ValueError, AttributeError, TypeError):
            return  # not ours
        if message.get("from") == self._holder:
            if message.get("stop"):
                self._stop.set()
            return  # this coordinator woke its own long-polls already
        if not queues:
            return
        self._loop.call_soon_threadsafe(self._on_queues, queues)
