"""Token-bucket arithmetic for rate limits, as pure functions. Buckets live in the store (so
that several coordinators share them); this module only says how they fill and drain."""

from __future__ import annotations

import math

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.model import Micros, RateLimit

DISPATCH_WINDOW: Micros = 60 * MICROS_PER_SECOND
# The longest wait this arithmetic reports (about a century): an absurd rate (1e-14 per second,
# say) then means "not in our lifetime" instead of a number no database column can hold.
MAX_WAIT: Micros = 100 * 365 * 24 * 3600 * MICROS_PER_SECOND


def _wait(seconds: float) -> Micros:
    """Seconds to whole microseconds, within [0, MAX_WAIT]; infinity or NaN is MAX_WAIT."""
    micros = seconds * MICROS_PER_SECOND
    if not micros < MAX_WAIT:  # also true for inf and NaN
        return MAX_WAIT
    return max(0, math.ceil(micros))


def refill_time(limit: RateLimit) -> Micros:
    """How long an empty bucket takes to fill."""
    return _wait(limit.burst / limit.rate)


def tokens_now(limit: RateLimit, tokens: float | None, as_of: Micros | None, now: Micros) -> float:
    """The bucket's tokens at `now`; a bucket never seen before is full."""
    if tokens is None or as_of is None:
        return float(limit.burst)
    elapsed = max(0, now - as_of) / MICROS_PER_SECOND
    return min(float(limit.burst), tokens + elapsed * limit.rate)


def whole_tokens(tokens: float) -> int:
    # A hair of tolerance so that 0.9999999 from float refills still counts as one token.
    return math.floor(tokens + 1e-9)


def next_token_at(limit: RateLimit, tokens: float, now: Micros) -> Micros:
    """When the bucket will next hold a whole token."""
    missing = max(0.0, 1.0 - tokens)
    return now + _wait(missing / limit.rate)


def roll_window(window_start: int, count: int, previous: int, now: Micros) -> tuple[int, int, int]:
    """Moves fixed one-minute dispatch windows forward to the one holding `now`."""
    current = now - now % DISPATCH_WINDOW
    if window_start == current:
        return window_start, count, previous
    if window_start == current - DISPATCH_WINDOW:
        return current, 0, count
    return current, 0, 0


def dispatch_rate(window_start: int, count: int, previous: int, now: Micros) -> float:
    """Jobs per second over the last minute, weighting the previous window by its overlap."""
    window_start, count, previous = roll_window(window_start, count, previous, now)
    into_window = (now - window_start) / DISPATCH_WINDOW
    return (previous * (1.0 - into_window) + count) / (DISPATCH_WINDOW / MICROS_PER_SECOND)
