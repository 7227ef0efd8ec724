"""The coordinator's own recent history, per queue and per minute, for the dashboard's graphs:
bounded (HISTORY_MINUTES per queue, MAX_QUEUES queues) and lost on restart by design."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.model import Micros

HISTORY_MINUTES = 24 * 60
MAX_QUEUES = 1000
MICROS_PER_MINUTE = 60 * MICROS_PER_SECOND
# Log-scale duration buckets: upper bounds 1 ms * 2**i, i = 0 .. 23 (about 2.3 hours), plus
# one for everything longer.
LOG_BUCKET_BOUNDS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(24))
FLOW_SERIES = ("started", "finished", "errors", "timeouts")


def log_bucket(seconds: float) -> int:
    if seconds <= LOG_BUCKET_BOUNDS[0]:
        return 0
    index = math.ceil(math.log2(seconds / LOG_BUCKET_BOUNDS[0]))
    return min(index, len(LOG_BUCKET_BOUNDS))


@dataclass
class Minute:
    flow: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLOW_SERIES, 0))
    wait: list[int] = field(default_factory=lambda: [0] * (len(LOG_BUCKET_BOUNDS) + 1))
    run: list[int] = field(default_factory=lambda: [0] * (len(LOG_BUCKET_BOUNDS) + 1))


@dataclass(frozen=True)
class Window:
    """A queue's history over a period: flow per minute (oldest first) and the summed
    distributions of wait and run time."""

    start_minute: int
    flow: list[dict[str, int]]
    wait: list[int]
    run: list[int]


class History:
    def __init__(self) -> None:
        # Queue -> minute number -> counts; queues in order of last use.
        self._queues: OrderedDict[str, dict[int, Minute]] = OrderedDict()

    def _minute(self, queue: str, now: Micros) -> Minute:
        minutes = self._queues.get(queue)
        if minutes is None:
            if len(self._queues) >= MAX_QUEUES:
                self._queues.popitem(last=False)
            minutes = self._queues[queue] = {}
        self._queues.move_to_end(queue)
        number = now // MICROS_PER_MINUTE
        current = minutes.get(number)
        if current is None:
            current = minutes[number] = Minute()
            for old in [m for m in minutes if m <= number - HISTORY_MINUTES]:
                del minutes[old]
        return current

    def count(self, queue: str, series: str, now: Micros, n: int = 1) -> None:
        self._minute(queue, now).flow[series] += n

    def observe(self, queue: str, kind: str, seconds: float, now: Micros) -> None:
        minute = self._minute(queue, now)
        buckets = minute.wait if kind == "wait" else minute.run
        buckets[log_bucket(seconds)] += 1

    def queues(self) -> list[str]:
        return sorted(self._queues)

    def window(self, queue: str, minutes: int, now: Micros) -> Window:
        minutes = max(1, min(minutes, HISTORY_MINUTES))
        last = now // MICROS_PER_MINUTE
        first = last - minutes + 1
        recorded = self._queues.get(queue, {})
        empty = Minute()
        flow = []
        wait = [0] * len(empty.wait)
        run = [0] * len(empty.run)
        for number in range(first, last + 1):
            minute = recorded.get(number, empty)
            flow.append(dict(minute.flow))
            wait = [a + b for a, b in zip(wait, minute.wait, strict=True)]
            run = [a + b for a, b in zip(run, minute.run, strict=True)]
        return Window(start_minute=first, flow=flow, wait=wait, run=run)
