"""The schedule firer: enqueues each due fire of each schedule once (the store's
schedule_fires key makes a restart or a second coordinator harmless) and sleeps until the
earliest next fire."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from conveyor_server.core.clock import Clock
from conveyor_server.core.jobs import JobService
from conveyor_server.core.metrics import Metrics, NoMetrics
from conveyor_server.core.model import Micros
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import Store
from conveyor_server.core.schedule_service import ScheduleService
from conveyor_server.core.schedules import MISFIRE_GRACE
from conveyor_server.maintenance.base import BackgroundService, RunResult

log = structlog.get_logger("conveyor.cron")


@dataclass(frozen=True)
class CronConfig:
    batch_size: int = 100
    max_depth: int = 16


class CronFirer(BackgroundService):
    name = "cron"

    def __init__(
        self,
        store: Store,
        schedules: ScheduleService,
        jobs: JobService,
        clock: Clock,
        alarm: DueTimeAlarm,
        config: CronConfig = CronConfig(),
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(clock, alarm)
        self._metrics: Metrics = metrics or NoMetrics()
        self._store = store
        self._schedules = schedules
        self._jobs = jobs
        self._config = config

    async def run_once(self, now: Micros) -> RunResult:
        fired = await self._store.fire_schedules(
            now, self._config.batch_size, self._schedules.plan, self._config.max_depth
        )
        self._count_isolated(fired.isolated)
        fires = fired.done
        for fire in fires:
            self._metrics.schedule_fired(
                fire.schedule, skipped=fire.job_id is None, late=now - fire.fire_at > MISFIRE_GRACE
            )
            log.info(
                "schedule.fired",
                schedule=fire.schedule,
                fire_at=fire.fire_at,
                job_id=fire.job_id or "",
                skipped=fire.job_id is None,
            )
        self._jobs.after_enqueue([f.enqueued for f in fires if f.enqueued is not None])
        return RunResult(
            processed=len(fires),
            more=len({f.schedule for f in fires}) + len(fired.isolated) >= self._config.batch_size,
            next_due_at=await self._store.next_schedule_fire(),
        )
