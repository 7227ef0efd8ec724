"""Recurring jobs: what the schedule RPCs mean. Fire times and misfire rules are in
core/schedules.py; firing itself is done by maintenance/cron.py through `plan`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import structlog

from conveyor_server.core.clock import Clock
from conveyor_server.core.jobs import new_job
from conveyor_server.core.model import JobSpecInput, Micros
from conveyor_server.core.namespaces import namespace_of, qualify_spec, schedule_not_found
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
# The queue a stored template names (unvalidated, local to the schedule's namespace): what a
# token's queue globs are checked against. Injected like TemplateReader.
TemplateQueue = Callable[[bytes], str]
# Which schedules a caller may see (core/scoped.py decides; the store applies it).
ScheduleFilter = Callable[[Schedule], bool]


class ScheduleService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        alarm: DueTimeAlarm,
        read_template: TemplateReader,
        template_queue: TemplateQueue,
    ) -> None:
        self._store = store
        self._clock = clock
        self._alarm = alarm
        self._read_template = read_template
        self._template_queue = template_queue

    def job_queue(self, schedule: Schedule) -> str:
        """The queue the schedule's jobs go to, as its namespace's callers name it."""
        return self._template_queue(schedule.spec.job_spec)

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

    async def get(self, name: str, visible: ScheduleFilter | None = None) -> Schedule:
        """`visible`: a schedule it refuses is NOT_FOUND, as if it did not exist."""
        schedule = await self._store.get_schedule(name)
        if visible is not None and not visible(schedule):
            raise schedule_not_found(name)
        return schedule

    async def list(
        self,
        after: str | None,
        limit: int,
        namespace: str | None = None,
        visible: ScheduleFilter | None = None,
    ) -> list[Schedule]:
        """`namespace`: only that namespace's schedules (None: all of them); `visible`: only
        those it accepts, pages still full (the store goes on reading past the others)."""
        return await self._store.list_schedules(after, limit, namespace=namespace, visible=visible)

    async def update(
        self,
        name: str,
        change: Callable[[ScheduleSpec], ScheduleSpec],
        visible: ScheduleFilter | None = None,
    ) -> Schedule:
        """`visible` is checked on the locked row, so a schedule the caller may not see is
        NOT_FOUND and left as it was, however another caller changes it meanwhile."""

        def apply(current: Schedule) -> Schedule:
            if visible is not None and not visible(current):
                raise schedule_not_found(name)
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

    async def set_paused(
        self, name: str, paused: bool, visible: ScheduleFilter | None = None
    ) -> Schedule:
        return await self.update(
            name, lambda spec: dataclasses.replace(spec, paused=paused), visible
        )

    async def delete(self, name: str, visible: ScheduleFilter | None = None) -> None:
        """`visible`: as for update, checked on the row the delete removes."""
        await self._store.delete_schedule(name, visible=visible)

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
