"""Queue settings and statistics: flow control is configured here and enforced by the store
when it hands out leases."""

from __future__ import annotations

import builtins
from collections.abc import Callable

from conveyor_server.core.clock import Clock
from conveyor_server.core.model import NameFilter, Queue, QueueConfig
from conveyor_server.core.notify import QueueWakeups
from conveyor_server.core.ports import Store


class QueueService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        wakeups: QueueWakeups,
        limits_changed: Callable[[str], None] = lambda _queue: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wakeups = wakeups
        self._limits_changed = limits_changed

    async def get(self, name: str) -> Queue:
        return await self._store.get_queue(name, self._clock.now())

    async def list(
        self,
        after: str | None,
        limit: int,
        namespace: str | None = None,
        names: NameFilter | None = None,
    ) -> list[Queue]:
        """`namespace`: only that namespace's queues (None: all of them); `names`: only the
        queues it admits, pages still full (the store goes on reading past the others)."""
        return await self._store.list_queues(
            after, limit, self._clock.now(), namespace=namespace, names=names
        )

    async def list_push(self, after: str | None, limit: int) -> builtins.list[QueueConfig]:
        """The settings of the push queues only, with no job counts (cheap to poll)."""
        return await self._store.list_push_queues(after, limit)

    async def update(self, name: str, change: Callable[[QueueConfig], QueueConfig]) -> Queue:
        queue = await self._store.update_queue(name, change, self._clock.now())
        # A resume or a raised limit may let waiting jobs through at once.
        self._limits_changed(name)
        self._wakeups.notify([name], urgent=True)
        return queue
