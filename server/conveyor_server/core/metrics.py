"""The one seam through which the lifecycle reports what happened, for metrics and the
dashboard's history. Core and store see only this protocol; the Prometheus implementation
lives in conveyor_server.observability and is injected by the composition root (as the clock
is). Every hook is synchronous and cheap: it runs on the request path."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from conveyor_server.core.model import EnqueueResult, LeasedJob, Micros, TransitionResult


class Finish(enum.Enum):
    """How a lease (or a job that was never leased) ended, as `outcome` labels say it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # dead-lettered: FAILED is the dead-letter state
    RETRIED = "retried"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    RELEASED = "released"  # handed back: the attempt does not count
    UNCONFIRMED = "unconfirmed"  # a lease nobody confirmed, handed back: the attempt does not count


class Metrics(Protocol):
    def enqueued(self, results: Sequence[EnqueueResult], now: Micros) -> None:
        """Jobs newly enqueued (deduplicated ones are left out by the caller)."""

    def leased(self, jobs: Sequence[LeasedJob], now: Micros) -> None: ...

    def promoted(self, results: Sequence[TransitionResult]) -> None:
        """Jobs that became due (a SCHEDULED job promoted, a dead job replayed)."""

    def lease_held_back(self, queues: Sequence[str]) -> None:
        """A claim found these queues without a rate-limit token (throttled)."""

    def finished(self, result: TransitionResult, finish: Finish, now: Micros) -> None: ...

    def schedule_fired(self, schedule: str, skipped: bool, late: bool) -> None:
        """A fire handled; `late`: more than the misfire grace after its time (a misfire
        that still ran, by RUN_ONCE or CATCH_UP)."""


class NoMetrics:
    """The default: reports go nowhere."""

    def enqueued(self, results: Sequence[EnqueueResult], now: Micros) -> None:
        pass

    def leased(self, jobs: Sequence[LeasedJob], now: Micros) -> None:
        pass

    def promoted(self, results: Sequence[TransitionResult]) -> None:
        pass

    def lease_held_back(self, queues: Sequence[str]) -> None:
        pass

    def finished(self, result: TransitionResult, finish: Finish, now: Micros) -> None:
        pass

    def schedule_fired(self, schedule: str, skipped: bool, late: bool) -> None:
        pass
