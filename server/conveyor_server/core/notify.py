"""In-process wake-ups: long-polling Lease calls wait for work in their queues, WaitJob calls
wait for a job to finish, and the waker waits for an earlier due time. Waiters subscribe
before they look at the store, so a notification between the look and the wait is not lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable


class Subscription:
    def __init__(self, hub: _Hub, keys: tuple[str, ...]) -> None:
        self._hub = hub
        self._keys = keys
        self.event = asyncio.Event()
        # Which keys were notified since the subscriber last cleared them, and whether any
        # notification said that limits changed (which no cached reasoning may ignore).
        self.fired: set[str] = set()
        self.urgent = False

    async def wait(self, seconds: float) -> bool:
        """True if notified within `seconds`."""
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self.event.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._hub.unsubscribe(self, self._keys)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Hub:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, keys: Iterable[str]) -> Subscription:
        key_tuple = tuple(keys)
        subscription = Subscription(self, key_tuple)
        for key in key_tuple:
            self._waiters[key].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription, keys: Iterable[str]) -> None:
        for key in keys:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(subscription)
                if not waiters:
                    del self._waiters[key]

    def notify(self, keys: Iterable[str], *, urgent: bool = False) -> None:
        for key in keys:
            for subscription in self._waiters.get(key, ()):
                subscription.fired.add(key)
                subscription.urgent = subscription.urgent or urgent
                subscription.event.set()

    def waiting(self, key: str) -> int:
        return len(self._waiters.get(key, ()))


class QueueWakeups(_Hub):
    """Keyed by queue name: 'jobs may be available here now'."""


class JobFinished(_Hub):
    """Keyed by job id: 'this job reached a terminal state'."""


class DueTimeAlarm:
    """Tells the waker that something becomes due at a time earlier than it planned to wake."""

    def __init__(self) -> None:
        self.planned_wake_at: int | None = None
        self.event = asyncio.Event()

    def due_at(self, at: int) -> None:
        if self.planned_wake_at is None or at < self.planned_wake_at:
            self.event.set()
