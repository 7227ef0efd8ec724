"""Recurring jobs: what the schedule RPCs mean. Fire times and misfire rules are in
core/schedules.py; firing itself is done by maintenance/cron.py through `plan`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import structlog

from conveyor_server.core.clock import Clock
from conveyor_server.core.jobs import new_job
from conveyor_server.core.model import JobSpecInput, Micros
from conveyor_server.core.namespaces import namespace_of, qualify_spec
from conveyor_server.core.notify import DueTimeAlarm
from conveyor_server.core.ports import PlannedFires, Store
from conveyor_server.core.schedules import (
    Schedule,
    ScheduleSpec,
    next_fire_after,
    plan_fires,
)
from conveyor_server.errors import ConveyorError

log = structlog.get_logger("conveyor.schedules")

# Turns a stored job template (a serialized JobSpec) into a validated job; injected by the
# composition root from the API layer, which owns the wire format.
TemplateReader = Callable[[bytes], JobSpecInput]


class ScheduleService:
    def __init__(
        self, store: Store, clock: Clock, alarm: DueTimeAlarm, read_template: TemplateReader
    ) -> None:
        self._store = store
        self._clock = clock
        self._alarm = alarm
        self._read_template = read_template

    def _fresh(self, spec: ScheduleSpec, previous: Schedule | None = None) -> Schedule:
        """A schedule whose next fire is computed from now (new, changed or resumed)."""
        next_fire_at = next_fire_after(spec.cron, spec.timezone, self._clock.now())
        self._alarm.due_at(next_fire_at)
        return Schedule(
            spec=spec,
            next_fire_at=next_fire_at,
            last_fire_at=previous.last_fire_at if previous else None,
            last_job_id=previous.last_job_id if previous else None,
        )

    async def create(self, spec: ScheduleSpec) -> Schedule:
        return await self._store.create_schedule(self._fresh(spec), self._clock.now())

    async def get(self, name: str) -> Schedule:
        return await self._store.get_schedule(name)

    async def list(
        self, after: str | None, limit: int, namespace: str | None = None
    ) -> list[Schedule]:
        """`namespace`: only that namespace's schedules (None: all of them)."""
        return await self._store.list_schedules(after, limit, namespace=namespace)

    async def update(self, name: str, change: Callable[[ScheduleSpec], ScheduleSpec]) -> Schedule:
        def apply(current: Schedule) -> Schedule:
            spec = change(current.spec)
            timing_changed = (spec.cron, spec.timezone) != (
                current.spec.cron,
                current.spec.timezone,
            )
            resumed = current.spec.paused and not spec.paused
            if timing_changed or resumed:
                # Fires missed while paused are not owed: a pause means "do not run".
                return self._fresh(spec, current)
            return dataclasses.replace(current, spec=spec)

        return await self._store.update_schedule(name, apply)

    async def set_paused(self, name: str, paused: bool) -> Schedule:
        return await self.update(name, lambda spec: dataclasses.replace(spec, paused=paused))

    async def delete(self, name: str) -> None:
        await self._store.delete_schedule(name)

    def plan(self, schedule: Schedule, now: Micros) -> PlannedFires:
        """The jobs a due schedule enqueues now; each is due at once. A template that no
        longer validates (limits lowered since) skips its fires, logged, and the schedule
        moves on to its next fire time."""
        plan = plan_fires(schedule, now)
        try:
            # Cron acts for the schedule's namespace: the template names the queue and task
            # type as that namespace's callers know them.
            template = qualify_spec(
                namespace_of(schedule.spec.name), self._read_template(schedule.spec.job_spec)
            )
        except ConveyorError as error:
            log.error("schedule.template_invalid", schedule=schedule.spec.name, error=str(error))
            return PlannedFires(fires=[], next_fire_at=plan.next_fire_at)
        return PlannedFires(
            fires=[(fire_at, new_job(template, now)) for fire_at in plan.fires],
            next_fire_at=plan.next_fire_at,
        )
