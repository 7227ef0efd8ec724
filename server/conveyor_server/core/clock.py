"""Time is passed in: the composition root builds one clock, tests use FakeClock.

What a wall-clock step does (issue 7, item 7). A coordinator reads the wall clock once, at
start, and from then on counts time with the monotonic clock: `SystemClock.now()` is the
start's wall time plus the monotonic time elapsed since. Lease expiries, retry backoffs,
delays, rate-limit buckets and long-poll waits are all differences of `now()`, so a step of
the system clock (an operator's `date -s`, an NTP step, a VM restored from a snapshot) does
not move them: a +45 s step does not expire healthy leases, a -1 h step does not keep a dead
worker's lease for an hour.

What users see (enqueue, lease and finish times, `run_at`, cron fires) is still wall time: the
coordinator's clock slews toward the system's wall clock by at most 1 % of the elapsed time
(36 s per hour), the way NTP corrects a clock without stepping it, and logs a warning
(`clock.wall_clock_apart`) while the two are more than a second apart. So after a step of
+45 s, timestamps catch up within about 75 minutes, and every duration meanwhile runs at most
1 % fast; after a step back, the coordinator's time runs 1 % slow (never backwards) until the
wall clock has caught up. Cron schedules follow the coordinator's time, so after a large step
they fire at the old wall time until the slew has absorbed it; restart the coordinator to
adopt a stepped wall clock at once (leases then count from the new time: a forward step at a
restart shortens the leases that were held across it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import structlog

MICROS_PER_SECOND = 1_000_000

log = structlog.get_logger("conveyor.clock")

# How fast the coordinator's time may run fast or slow to converge on the wall clock.
MAX_SLEW = 0.01
# How far apart the wall clock and the coordinator's time may drift before a warning.
_WARN_APART_NS = 1_000_000_000


class Clock(Protocol):
    def now(self) -> int:
        """Wall-clock time in microseconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall time at start, advanced by the monotonic clock, slewed toward the wall clock."""

    def __init__(
        self,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        max_slew: float = MAX_SLEW,
    ) -> None:
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._max_slew = max_slew
        self._last_monotonic = monotonic_ns()
        self._now_ns = wall_ns()
        self._warned_apart_ns = 0

    def now(self) -> int:
        monotonic = self._monotonic_ns()
        elapsed = max(monotonic - self._last_monotonic, 0)
        self._last_monotonic = monotonic
        now = self._now_ns + elapsed
        apart = self._wall_ns() - now
        correction = min(abs(apart), int(elapsed * self._max_slew))
        now += correction if apart > 0 else -correction
        self._now_ns = now
        self._warn_if_apart(apart)
        return now // 1_000

    def _warn_if_apart(self, apart_ns: int) -> None:
        """Warns when the wall clock first strays more than a second, and again whenever it
        strays another second further (or to the other side); quiet while the slew closes the
        gap, and all clear once back within a second."""
        warned = self._warned_apart_ns
        if abs(apart_ns) <= _WARN_APART_NS:
            self._warned_apart_ns = 0
        elif apart_ns * warned <= 0 or abs(apart_ns) > abs(warned) + _WARN_APART_NS:
            self._warned_apart_ns = apart_ns
            log.warning(
                "clock.wall_clock_apart",
                wall_minus_coordinator_s=round(apart_ns / 1e9, 3),
                slew=self._max_slew,
            )


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
