"""Time is passed in: the composition root builds one clock, tests use FakeClock."""

from __future__ import annotations

import time
from typing import Protocol

MICROS_PER_SECOND = 1_000_000


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock time in microseconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> int:
        return time.time_ns() // 1_000


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start_us: int = 1_800_000_000 * MICROS_PER_SECOND) -> None:
        self._now = start_us

    def now(self) -> int:
        return self._now

    def advance(self, seconds: float) -> int:
        self._now += round(seconds * MICROS_PER_SECOND)
        return self._now

    def set(self, now_us: int) -> None:
        self._now = now_us
