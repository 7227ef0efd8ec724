"""The services as one caller sees them: within its Scope (core/namespaces.py).

This is the one place where a scope meets the services; the servicer (gRPC and HTTP alike)
calls nothing else. Names go in qualified and come out local; a job outside the scope (another
namespace, or a queue the token's globs do not match) is NOT_FOUND with the text of a missing
job, checked before anything is done to it (cancel, retry, wait). A schedule whose job queue
the globs do not match is NOT_FOUND in the words of a missing schedule (get, update, pause,
resume, delete), checked by the store on the row it acts on. Lists are filtered by the store
(a page is never short because rows were dropped after the query): by namespace in SQL, and
by the globs as the store reads (ListQueues, ListSchedules)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from conveyor_server.core.contracts import TaskType
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import (
    EnqueueResult,
    HeartbeatParams,
    HeartbeatResult,
    Job,
    JobPage,
    JobSpecInput,
    LeasedJob,
    ListJobsParams,
    Micros,
    Queue,
    QueueConfig,
    ReceiptParams,
    ReplyLimit,
    TaskTypeRef,
    TransitionResult,
    Version,
)
from conveyor_server.core.namespaces import Scope, job_not_found
from conveyor_server.core.queues import QueueService
from conveyor_server.core.rules import no_such_parent
from conveyor_server.core.schedule_service import ScheduleService
from conveyor_server.core.schedules import Schedule, ScheduleSpec
from conveyor_server.core.task_types import TaskTypeService
from conveyor_server.errors import ConveyorError, LeaseLost, NotFound

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Services:
    jobs: JobService
    queues: QueueService
    schedules: ScheduleService
    task_types: TaskTypeService


class Namespaced:
    def __init__(self, services: Services, scope: Scope) -> None:
        self._s = services
        self.scope = scope

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(self, spec: JobSpecInput) -> EnqueueResult:
        await self._parents_in_scope([spec])
        result = await self._s.jobs.enqueue(self.scope.spec_in(spec))
        return self.scope.enqueued_out(result)

    async def enqueue_batch(self, specs: Sequence[JobSpecInput]) -> list[EnqueueResult]:
        await self._parents_in_scope(specs)
        qualified = [self.scope.spec_in(s, f"jobs[{i}].") for i, s in enumerate(specs)]
        return [self.scope.enqueued_out(r) for r in await self._s.jobs.enqueue_batch(qualified)]

    async def lease(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_jobs: int,
        wait_seconds: float,
        *,
        task_types: tuple[TaskTypeRef, ...] = (),
        reply_limit: ReplyLimit | None = None,
        confirm_within: Micros | None = None,
    ) -> list[LeasedJob]:
        leased = await self._s.jobs.lease(
            worker_id,
            [self.scope.qualify(q, "queues[]") for q in queues],
            max_jobs,
            wait_seconds,
            task_types=tuple(self.scope.task_type_ref_in(t) for t in task_types),
            reply_limit=reply_limit,
            confirm_within=confirm_within,
        )
        return [self.scope.leased_out(job) for job in leased]

    async def hand_back(self, jobs: Sequence[LeasedJob]) -> None:
        await self._s.jobs.hand_back([self.scope.leased_in(job) for job in jobs])

    async def heartbeat(
        self, items: Sequence[HeartbeatParams]
    ) -> list[HeartbeatResult | ConveyorError]:
        outcomes = await self._s.jobs.heartbeat(items)
        return await self._fenced([i.job_id for i in items], outcomes)

    async def receipt(
        self, receipts: Sequence[ReceiptParams]
    ) -> list[TransitionResult | ConveyorError]:
        outcomes = await self._s.jobs.receipt(receipts)
        return await self._fenced([r.job_id for r in receipts], outcomes)

    async def _fenced(
        self, job_ids: Sequence[str], outcomes: Sequence[R | ConveyorError]
    ) -> list[R | ConveyorError]:
        """Heartbeats and receipts are fenced by the lease token, which only a Lease in the
        job's own scope hands out, so a success needs no check. A refused one would tell a
        foreign job (LeaseLost) from a missing one (NotFound): there, look the job up and
        answer NOT_FOUND unless it is in scope. Only the rare refusals pay for the read."""
        checked: list[R | ConveyorError] = []
        for job_id, outcome in zip(job_ids, outcomes, strict=True):
            if isinstance(outcome, LeaseLost):
                try:
                    await self.get(job_id)
                except NotFound as missing:
                    outcome = missing
            checked.append(outcome)
        return checked

    async def _parents_in_scope(self, specs: Sequence[JobSpecInput]) -> None:
        """A parent_job_id outside the scope is refused as the store refuses a missing one
        (one read per distinct parent; jobs without a parent cost nothing)."""
        for parent in dict.fromkeys(s.parent_job_id for s in specs if s.parent_job_id):
            try:
                await self._owned(parent)
            except NotFound:
                raise no_such_parent(parent) from None

    async def _owned(self, job_id: str) -> Job:
        try:
            job = await self._s.jobs.get(job_id)
        except NotFound:
            raise job_not_found(job_id) from None
        if not self.scope.owns_queue(job.queue):
            raise job_not_found(job_id)
        return job

    async def get(self, job_id: str) -> Job:
        return self.scope.job_out(await self._owned(job_id))

    async def list_jobs(self, params: ListJobsParams) -> JobPage:
        if params.queue:
            params = replace(params, queue=self.scope.qualify(params.queue, "queue"))
        else:
            params = replace(params, namespace=self.scope.namespace)
        page = await self._s.jobs.list(params)
        return replace(page, jobs=[self.scope.job_out(job) for job in page.jobs])

    async def cancel(self, job_id: str) -> Job:
        await self._owned(job_id)
        return self.scope.job_out(await self._s.jobs.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        await self._owned(job_id)
        return self.scope.job_out(await self._s.jobs.retry(job_id))

    async def wait(self, job_id: str, timeout_seconds: float) -> Job:
        try:
            job = await self._s.jobs.wait(
                job_id, timeout_seconds, visible=lambda job: self.scope.owns_queue(job.queue)
            )
        except NotFound:
            raise job_not_found(job_id) from None
        return self.scope.job_out(job)

    # -- schedules ---------------------------------------------------------------------------

    def _schedule_visible(self) -> Callable[[Schedule], bool] | None:
        """A schedule is in scope when its job queue is (the name is already qualified);
        None when the token has no globs. Outside the scope it is NOT_FOUND, as a job is."""
        if not self.scope.queue_globs:
            return None
        job_queue = self._s.schedules.job_queue
        return lambda schedule: self.scope.may_use_queue(job_queue(schedule))

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        created = await self._s.schedules.create(self.scope.schedule_spec_in(spec))
        return self.scope.schedule_out(created)

    async def get_schedule(self, name: str) -> Schedule:
        found = await self._s.schedules.get(self.scope.qualify(name), self._schedule_visible())
        return self.scope.schedule_out(found)

    async def list_schedules(self, after: str | None, limit: int) -> list[Schedule]:
        found = await self._s.schedules.list(
            self.scope.qualify(after) if after else None,
            limit,
            namespace=self.scope.namespace,
            visible=self._schedule_visible(),
        )
        return [self.scope.schedule_out(s) for s in found]

    async def update_schedule(
        self, name: str, change: Callable[[ScheduleSpec], ScheduleSpec]
    ) -> Schedule:
        def scoped(spec: ScheduleSpec) -> ScheduleSpec:
            return self.scope.schedule_spec_in(change(self.scope.schedule_spec_out(spec)))

        updated = await self._s.schedules.update(
            self.scope.qualify(name), scoped, self._schedule_visible()
        )
        return self.scope.schedule_out(updated)

    async def set_schedule_paused(self, name: str, paused: bool) -> Schedule:
        updated = await self._s.schedules.set_paused(
            self.scope.qualify(name), paused, self._schedule_visible()
        )
        return self.scope.schedule_out(updated)

    async def delete_schedule(self, name: str) -> None:
        await self._s.schedules.delete(self.scope.qualify(name), self._schedule_visible())

    # -- queues ------------------------------------------------------------------------------

    async def get_queue(self, name: str) -> Queue:
        return self.scope.queue_out(await self._s.queues.get(self.scope.qualify(name)))

    async def list_queues(self, after: str | None, limit: int) -> list[Queue]:
        found = await self._s.queues.list(
            self.scope.qualify(after) if after else None,
            limit,
            namespace=self.scope.namespace,
            names=self.scope.queue_names(),
        )
        return [self.scope.queue_out(q) for q in found]

    async def update_queue(self, name: str, change: Callable[[QueueConfig], QueueConfig]) -> Queue:
        def scoped(config: QueueConfig) -> QueueConfig:
            return self.scope.queue_config_in(change(self.scope.queue_config_out(config)))

        updated = await self._s.queues.update(self.scope.qualify(name, "queue.name"), scoped)
        return self.scope.queue_out(updated)

    # -- task types --------------------------------------------------------------------------

    async def register_task_type(
        self, name: str, version: Version, message_type: str, descriptors: bytes
    ) -> TaskType:
        stored = await self._s.task_types.register(
            name, version, message_type, descriptors, namespace=self.scope.namespace
        )
        return self.scope.task_type_out(stored)

    async def get_task_type(self, name: str, version: Version | None) -> TaskType:
        found = await self._s.task_types.get(self.scope.qualify(name), version)
        return self.scope.task_type_out(found)

    async def list_task_types(
        self, after: tuple[str, Version] | None, limit: int
    ) -> list[TaskType]:
        cursor = (self.scope.qualify(after[0]), after[1]) if after else None
        found = await self._s.task_types.list(cursor, limit, namespace=self.scope.namespace)
        return [self.scope.task_type_out(t) for t in found]
