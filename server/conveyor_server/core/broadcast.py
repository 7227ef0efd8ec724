"""Queue wake-ups shared between coordinators: what wakes long-polls here is also published
(as a hint) to the coordinators sharing the database, and what they publish wakes the
long-polls here. Publishing is batched: one message per event-loop turn, whatever the
number of receipts or enqueues in it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from conveyor_server.core.notify import QueueWakeups

log = structlog.get_logger("conveyor.core")

Publish = Callable[[Sequence[str]], Awaitable[None]]


class BroadcastWakeups(QueueWakeups):
    def __init__(self, publish: Publish) -> None:
        super().__init__()
        self._publish = publish
        self._pending: set[str] = set()
        self._flushing: asyncio.Task[None] | None = None

    def notify(self, keys: Iterable[str], *, urgent: bool = False) -> None:
        keys = list(keys)
        super().notify(keys, urgent=urgent)
        self._share(keys)

    def announce(self, queue: str, count: int, types: frozenset[str] | None) -> int:
        woken = super().announce(queue, count, types)
        self._share([queue])
        return woken

    def heard(self, queues: list[str]) -> None:
        """Another coordinator made jobs available: wake one long-poll per queue here; as with
        local news, one that fills up passes the wake-up on (the message carries no count)."""
        for queue in queues:
            super().announce(queue, 1, None)

    def _share(self, keys: list[str]) -> None:
        if not keys:
            return
        self._pending.update(keys)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # gather what the rest of this turn adds
        while self._pending:
            queues = sorted(self._pending)
            self._pending.clear()
            try:
                await self._publish(queues)
            except Exception as exc:  # a hint: long-polls elsewhere still time out
                log.warning("wakeups.publish_failed", error=repr(exc)[:200])
