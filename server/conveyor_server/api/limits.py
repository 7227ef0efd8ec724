"""Limits per principal: concurrent long-polls and enqueue rate.

Both are kept in memory per coordinator (several coordinators sharing a database each allow
the full amount): they protect one process's event loop and connections from one caller,
which is a per-process resource. A refusal carries how long to wait (`Exhausted.retry_after`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# A principal idle this long has its bucket forgotten (it is full again by then anyway).
_FORGET_AFTER_SECONDS = 300.0
# Hint for a caller refused a long-poll slot: another poll usually ends within this.
LONG_POLL_RETRY_SECONDS = 1.0


class Exhausted(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class PrincipalLimitsConfig:
    # Long-polls (Lease with a wait, WaitJob) one principal may hold open at once; 0: no limit.
    max_long_polls: int = 1000
    # Jobs one principal may enqueue per second (sustained) and at once (burst); rate 0: none.
    enqueue_rate: float = 1000.0
    enqueue_burst: int = 2000

    def __post_init__(self) -> None:
        if self.max_long_polls < 0:
            raise ValueError("max_long_polls must be at least 0")
        if not (math.isfinite(self.enqueue_rate) and self.enqueue_rate >= 0):
            raise ValueError("enqueue_rate must be a finite number of jobs per second, >= 0")
        if self.enqueue_burst < 1:
            raise ValueError("enqueue_burst must be at least 1")


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class PrincipalLimits:
    config: PrincipalLimitsConfig
    monotonic: Callable[[], float] = time.monotonic
    _polls: dict[str, int] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    @contextmanager
    def long_poll(self, principal: str) -> Iterator[None]:
        """Holds one long-poll slot of `principal` for the duration of the block."""
        limit = self.config.max_long_polls
        held = self._polls.get(principal, 0)
        if limit and held >= limit:
            raise Exhausted(
                f"this principal already holds {held} long-polls (at most {limit}); "
                f"retry in {LONG_POLL_RETRY_SECONDS:g} s",
                LONG_POLL_RETRY_SECONDS,
            )
        self._polls[principal] = held + 1
        try:
            yield
        finally:
            left = self._polls[principal] - 1
            if left:
                self._polls[principal] = left
            else:
                del self._polls[principal]

    def take_enqueue(self, principal: str, jobs: int) -> None:
        """Takes `jobs` from the principal's bucket, or raises Exhausted with the wait."""
        rate, burst = self.config.enqueue_rate, self.config.enqueue_burst
        if rate == 0 or jobs <= 0:
            return
        now = self.monotonic()
        self._forget_idle(now)
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        # A batch larger than the burst costs a full bucket (it waits for one, and is not
        # refused for ever); batch sizes have their own bound in validation.
        jobs = min(jobs, burst)
        if bucket.tokens < jobs:
            wait = (jobs - bucket.tokens) / rate
            raise Exhausted(
                f"enqueue rate of this principal exceeded ({rate:g} jobs/s); retry in {wait:.3f} s",
                wait,
            )
        bucket.tokens -= jobs

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) < 1024:
            return
        idle = [n for n, b in self._buckets.items() if now - b.updated > _FORGET_AFTER_SECONDS]
        for name in idle:
            del self._buckets[name]
