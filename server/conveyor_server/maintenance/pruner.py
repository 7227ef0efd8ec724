"""The retention pruner: deletes finished jobs past their queue's retention in bounded
batches, each its own short transaction, so the hot path never waits long behind it."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.model import Micros
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import Store
from conveyor_server.maintenance.base import BackgroundService, RunResult

log = structlog.get_logger("conveyor.pruner")


@dataclass(frozen=True)
class PrunerConfig:
    batch_size: int = 500
    # Retention is counted in hours and days; looking once a minute is plenty.
    interval: Micros = 60 * MICROS_PER_SECOND


class Pruner(BackgroundService):
    name = "pruner"

    def __init__(
        self, store: Store, clock: Clock, alarm: DueTimeAlarm, config: PrunerConfig = PrunerConfig()
    ) -> None:
        super().__init__(clock, alarm)
        self._store = store
        self._config = config

    async def run_once(self, now: Micros) -> RunResult:
        pruned = await self._store.prune(now, self._config.batch_size)
        self._count_isolated(pruned.isolated)
        deleted = pruned.done
        if deleted:
            log.info("jobs.pruned", count=deleted)
        return RunResult(
            processed=deleted,
            more=deleted >= self._config.batch_size,
            next_due_at=now + self._config.interval,
        )
