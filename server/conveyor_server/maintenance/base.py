"""The shared runner of background services: each service has one `run_once(now)`, which tests
call directly; this base calls it in a loop, sleeping until the next due time the service
reports (or until an alarm says something earlier became due), never on a fixed poll."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.model import Micros
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import Isolated
from conveyor_server.maintenance.leader import Leadership

log = structlog.get_logger("conveyor.maintenance")

# A safety net, not a poll: with one coordinator every due time is known in advance.
MAX_SLEEP_SECONDS = 60.0
# After an unexpected error (a broken disk, say) wait before trying again, without dying.
ERROR_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunResult:
    processed: int
    # The batch was full: run again at once.
    more: bool
    next_due_at: Micros | None


class BackgroundService:
    name = "service"

    def __init__(self, clock: Clock, alarm: DueTimeAlarm) -> None:
        self._clock = clock
        self._alarm = alarm
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows set aside because they could not be processed (core.ports.Isolated): each one
        # is marked by the store so that it is not met again, and the service goes on.
        self.isolated_rows = 0
        # Set when several coordinators share the database: run only while leading.
        self.leadership: Leadership | None = None

    async def run_once(self, now: Micros) -> RunResult:
        raise NotImplementedError

    def _count_isolated(self, isolated: Sequence[Isolated]) -> None:
        for row in isolated:
            self.isolated_rows += 1
            log.warning(
                "maintenance.row_isolated",
                service=self.name,
                kind=row.kind,
                name=row.name,
                reason=row.reason,
            )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name=f"conveyor-{self.name}")

    async def stop(self) -> None:
        """Idempotent; waits for the current run to finish, then resigns any leadership."""
        self._stopped.set()
        self._alarm.event.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.leadership is not None:
            try:
                await self.leadership.resign()
            except Exception as exc:  # the lease then simply runs out
                log.warning("maintenance.resign_failed", service=self.name, error=repr(exc))

    async def _run_forever(self) -> None:
        while not self._stopped.is_set():
            self._alarm.planned_wake_at = None
            self._alarm.event.clear()
            try:
                if not await self._leading():
                    await self._sleep(self._follower_sleep())
                    continue
                result = await self.run_once(self._clock.now())
            except Exception as exc:
                log.error("maintenance.failed", service=self.name, error=repr(exc))
                await self._sleep(ERROR_BACKOFF_SECONDS)
                continue
            if result.more:
                continue
            self._alarm.planned_wake_at = result.next_due_at
            if result.next_due_at is None:
                delay = MAX_SLEEP_SECONDS
            else:
                delay = (result.next_due_at - self._clock.now()) / MICROS_PER_SECOND
            await self._sleep(min(max(delay, 0.0), self._longest_sleep()))

    async def _leading(self) -> bool:
        if self.leadership is None:
            return True
        return await self.leadership.leads(self._clock.now())

    def _longest_sleep(self) -> float:
        # A leader wakes in time to renew its lease.
        if self.leadership is None:
            return MAX_SLEEP_SECONDS
        return min(MAX_SLEEP_SECONDS, self.leadership.renew_every_seconds)

    def _follower_sleep(self) -> float:
        assert self.leadership is not None
        return self.leadership.renew_every_seconds

    async def _sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._alarm.event.wait()
        except TimeoutError:
            pass
