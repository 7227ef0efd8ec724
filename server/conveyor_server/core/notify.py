"""In-process wake-ups: long-polling Lease calls wait for work in their queues, WaitJob calls
wait for a job to finish, and the waker waits for an earlier due time. Waiters subscribe
before they look at the store, so a notification between the look and the wait is not lost.

With one coordinator per database these notifications are authoritative: every transition
that can let a sleeping long-poll lease something passes through this process.

Queue wake-ups wake about as many long-polls as there is news (no thundering herd: with
1,000 idle long-polls, waking them all cost one write transaction each per enqueue). The
rule that keeps a job from sitting AVAILABLE while a long-poll that could take it sleeps is
the baton: a woken long-poll that ends up with less than it could take passes its wake-up on
to a sleeper that might (see `QueueWakeups.pass_on`)."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

# What a long-poll can take, for baton passing: the task types it declared (name, version),
# or None for a long-poll that takes any job. An empty claim by one long-poll tells that no
# other long-poll with the same capability could lease anything either.
Capability = frozenset[tuple[str, str]] | None


@dataclass(frozen=True, slots=True)
class News:
    """Why a long-poll was woken in one queue: work of these task types (None: of any type,
    such as a freed concurrency slot), announced at `round`; `tried` are the capabilities
    that already came up empty on it, so the baton never visits the same kind twice."""

    types: frozenset[str] | None
    round: int
    tried: frozenset[Capability] = frozenset()


class Subscription:
    def __init__(
        self, hub: _Hub, keys: tuple[str, ...], capability: Capability, order: int, wants: int
    ) -> None:
        self._hub = hub
        self._keys = keys
        self.capability = capability
        self.wants = wants  # how many jobs the long-poll asks for (its max_jobs)
        self.names: frozenset[str] | None = (
            None if capability is None else frozenset(name for name, _ in capability)
        )
        self.order = order
        self.event = asyncio.Event()
        # Which keys were notified since the subscriber last cleared them, and whether any
        # notification said that limits changed (which no cached reasoning may ignore).
        self.fired: set[str] = set()
        self.urgent = False
        # Per queue, the news this long-poll was woken with (for the baton).
        self.news: dict[str, News] = {}

    def can_take(self, types: frozenset[str] | None) -> bool:
        return self.names is None or types is None or not self.names.isdisjoint(types)

    def wake(self, key: str, news: News | None = None, *, urgent: bool = False) -> None:
        self.fired.add(key)
        self.urgent = self.urgent or urgent
        if news is not None:
            self.news[key] = news
        self.event.set()

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
        # Per key, the subscriptions in the order they subscribed (a dict is an ordered set):
        # the longest waiting is woken first.
        self._waiters: defaultdict[str, dict[Subscription, None]] = defaultdict(dict)
        self._order = itertools.count()

    def subscribe(
        self, keys: Iterable[str], capability: Capability = None, wants: int = 1
    ) -> Subscription:
        key_tuple = tuple(keys)
        subscription = Subscription(self, key_tuple, capability, next(self._order), max(wants, 1))
        for key in key_tuple:
            self._waiters[key][subscription] = None
        return subscription

    def unsubscribe(self, subscription: Subscription, keys: Iterable[str]) -> None:
        for key in keys:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.pop(subscription, None)
                if not waiters:
                    del self._waiters[key]

    def notify(self, keys: Iterable[str], *, urgent: bool = False) -> None:
        """Wakes every subscriber of these keys."""
        for key in keys:
            for subscription in self._waiters.get(key, ()):
                subscription.wake(key, urgent=urgent)

    def waiting(self, key: str) -> int:
        return len(self._waiters.get(key, ()))


class QueueWakeups(_Hub):
    """Keyed by queue name: 'jobs may be available here now'."""

    def announce(self, queue: str, count: int, types: frozenset[str] | None) -> int:
        """`count` units of work in `queue` (jobs of these task types became available, or
        slots freed): wakes sleeping long-polls that could take them, longest waiting first,
        until the jobs they ask for add up to `count`. Returns how many it woke."""
        news = News(types=types, round=next(self._order))
        woken = 0
        for subscription in self._waiters.get(queue, ()):
            if count <= 0:
                break
            if not subscription.event.is_set() and subscription.can_take(types):
                subscription.wake(queue, news)
                woken += 1
                count -= subscription.wants
        return woken

    def pass_on(self, woken: Subscription, leased: int, max_jobs: int) -> None:
        """The baton: a long-poll woken by news has claimed once since, and leased `leased`.
        Full (`max_jobs`): more may wait, so one more sleeper is woken. Less: nothing is left
        that this long-poll's capability could take, so one sleeper of a capability not yet
        tried on this news is woken, if the news may still hold work for one. A chain visits
        only long-polls that were already sleeping when the news came, so it ends."""
        for queue, news in woken.news.items():
            if leased >= max_jobs:
                self._wake_one(queue, news, skip=frozenset())
            elif woken.capability is not None:  # one that takes any job found none: stop
                tried = news.tried | {woken.capability}
                self._wake_one(queue, News(news.types, news.round, tried), skip=tried)

    def forward(self, woken: Subscription) -> None:
        """A woken long-poll ended (cancelled) before it could claim: its wake-up goes on."""
        for queue, news in woken.news.items():
            self._wake_one(queue, news, skip=news.tried)

    def _wake_one(self, queue: str, news: News, skip: frozenset[Capability]) -> None:
        for subscription in self._waiters.get(queue, ()):
            if subscription.order > news.round:
                return  # the rest subscribed after the news: their first claim saw it
            if (
                not subscription.event.is_set()
                and subscription.capability not in skip
                and subscription.can_take(news.types)
            ):
                subscription.wake(queue, news)
                return


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
