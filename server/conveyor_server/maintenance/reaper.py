"""The lease reaper: a lease that runs out without a receipt is a failed attempt ("lease
expired"); the job is retried by its policy or dead-lettered, and the lost lease's token is
cleared so that a late receipt from it is refused."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor_server.core import lifecycle
from conveyor_server.core.clock import Clock
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import Micros
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import Store
from conveyor_server.maintenance.base import BackgroundService, RunResult


@dataclass(frozen=True)
class ReaperConfig:
    batch_size: int = 500


class Reaper(BackgroundService):
    name = "reaper"

    def __init__(
        self,
        store: Store,
        jobs: JobService,
        clock: Clock,
        alarm: DueTimeAlarm,
        config: ReaperConfig = ReaperConfig(),
    ) -> None:
        super().__init__(clock, alarm)
        self._store = store
        self._jobs = jobs
        self._config = config

    async def run_once(self, now: Micros) -> RunResult:
        rescued = await self._store.rescue_expired(
            now, self._config.batch_size, lifecycle.decide_lease_expired
        )
        self._count_isolated(rescued.isolated)
        expired = rescued.done
        self._jobs.after_expiry(expired)
        due = await self._store.due_times()
        return RunResult(
            processed=len(expired),
            more=len(expired) >= self._config.batch_size,
            next_due_at=due.next_lease_expiry_at,
        )
