"""The due-time waker: makes SCHEDULED jobs AVAILABLE when their run_at or retry time comes,
and wakes the Lease long-polls of their queues."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_server.core.clock import Clock
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import Micros
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import Store
from conveyor_server.maintenance.base import BackgroundService, RunResult


@dataclass(frozen=True)
class WakerConfig:
    batch_size: int = 1000


class Waker(BackgroundService):
    name = "waker"

    def __init__(
        self,
        store: Store,
        jobs: JobService,
        clock: Clock,
        alarm: DueTimeAlarm,
        config: WakerConfig = WakerConfig(),
    ) -> None:
        super().__init__(clock, alarm)
        self._store = store
        self._jobs = jobs
        self._config = config

    async def run_once(self, now: Micros) -> RunResult:
        promoted = await self._store.promote_due(now, self._config.batch_size)
        self._jobs.after_promotion(promoted)
        due = await self._store.due_times()
        return RunResult(
            processed=len(promoted),
            more=len(promoted) >= self._config.batch_size,
            next_due_at=due.next_scheduled_at,
        )
