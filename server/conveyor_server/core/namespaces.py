"""Namespaces: every queue, job, schedule and task type lives in one, and a caller sees only
its own (plain Python; issue 10, item 2).

How they are stored: by name qualification, in this one module. A name in namespace `team`
is stored as `team/<name>`; a name in the namespace `default` is stored as it is, so the data
of a coordinator without --auth (which acts in `default`) and of older versions is already in
`default`, and nothing is migrated. Names on the wire never contain "/" (api/validation.py
allows letters, digits, ".", "_" and "-"; so do namespace names), so a stored name belongs to
exactly one namespace: the text before its "/" if it has one, else `default`. Jobs have no
name: a job is in the namespace of its queue. Task types are qualified like queues, and a job's
task type with its queue, so contracts, lease filters by task type and worker capabilities
stay within a namespace without the store knowing about namespaces.

`Scope` is what a caller may see: its namespace and its token's queue globs. `Namespaced`
(core/scoped.py) is the only place that applies a scope to the services: names are qualified
on the way in, stripped on the way out, and a job outside the scope is answered with exactly
the NOT_FOUND of a job that does not exist (`job_not_found`). Background services act on
behalf of the namespace that owns the row: cron qualifies a schedule's template with the
schedule's namespace (`namespace_of`), the pusher shows the endpoint local names (`local_of`).

Stored names keep the column width (128 characters, the wire limit): in a namespace other
than `default`, `namespace/name` must fit, so a name there may have at most
127 - len(namespace) characters; a longer one is INVALID_ARGUMENT saying so."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from conveyor_server.core.auth import DEFAULT_NAMESPACE, queue_matches
from conveyor_server.core.contracts import TaskType
from conveyor_server.core.model import (
    EnqueueResult,
    Job,
    JobSpecInput,
    LeasedJob,
    NameFilter,
    Queue,
    QueueConfig,
    TaskTypeRef,
)
from conveyor_server.core.schedules import Schedule, ScheduleSpec
from conveyor_server.errors import InvalidArgument, NotFound, shown

SEPARATOR = "/"
# The values that carry a queue and a task type name.
Named = TypeVar("Named", EnqueueResult, Job, LeasedJob)
# The width of the name columns (store/schema.py) and the wire limit of a name.
MAX_STORED_NAME = 128
# The characters that start a wildcard in a glob (fnmatch has no escape character).
_WILDCARDS = frozenset("*?[")


def job_not_found(job_id: str) -> NotFound:
    """The one answer for a job that does not exist *or* is outside the caller's scope: the
    store's text, so that the two cannot be told apart."""
    return NotFound(f"job {shown(job_id)} not found")


def schedule_not_found(stored_name: str) -> NotFound:
    """The one answer for a schedule that does not exist *or* whose job queue the caller's
    globs do not match: the store raises it too, so that the two cannot be told apart."""
    return NotFound(f"schedule {shown(stored_name)} not found")


def glob_prefix(glob: str) -> str:
    """The literal text every name a glob matches starts with (up to its first wildcard)."""
    for index, char in enumerate(glob):
        if char in _WILDCARDS:
            return glob[:index]
    return glob


def namespace_of(stored: str) -> str:
    """The namespace a stored name (queue, schedule, task type) belongs to."""
    namespace, separator, _ = stored.partition(SEPARATOR)
    return namespace if separator else DEFAULT_NAMESPACE


def local_of(stored: str) -> str:
    """A stored name as its own namespace's callers know it."""
    _, separator, local = stored.partition(SEPARATOR)
    return local if separator else stored


def qualify_in(namespace: str, local: str, what: str = "name") -> str:
    if namespace == DEFAULT_NAMESPACE:
        return local
    stored = f"{namespace}{SEPARATOR}{local}"
    if len(stored) > MAX_STORED_NAME:
        room = MAX_STORED_NAME - len(namespace) - len(SEPARATOR)
        raise InvalidArgument(
            f"{what} {shown(local)} is too long for namespace {shown(namespace)}: "
            f"names there may have at most {room} characters"
        )
    return stored


def qualify_spec(namespace: str, spec: JobSpecInput, path: str = "job.") -> JobSpecInput:
    return dataclasses.replace(
        spec,
        queue=qualify_in(namespace, spec.queue, f"{path}queue"),
        task_type=qualify_in(namespace, spec.task_type, f"{path}task_type"),
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """What one caller may see and touch: its namespace, and within it the queues its token's
    globs match (empty: every queue). Without --auth every caller has `Scope()`."""

    namespace: str = DEFAULT_NAMESPACE
    queue_globs: tuple[str, ...] = ()

    # -- names -------------------------------------------------------------------------------

    def qualify(self, local: str, what: str = "name") -> str:
        return qualify_in(self.namespace, local, what)

    def local(self, stored: str) -> str | None:
        """The caller's name for a stored name; None if it is in another namespace."""
        if namespace_of(stored) != self.namespace:
            return None
        return local_of(stored)

    def may_use_queue(self, local_queue: str) -> bool:
        """Whether the token's globs match a queue as the caller names it."""
        return queue_matches(local_queue, self.queue_globs)

    def owns_queue(self, stored_queue: str) -> bool:
        local = self.local(stored_queue)
        return local is not None and self.may_use_queue(local)

    def queue_names(self) -> NameFilter | None:
        """The store's filter for the stored names of the queues in scope; None when the
        token has no globs (the namespace filter alone is the scope)."""
        if not self.queue_globs:
            return None
        prefixes = tuple(
            dict.fromkeys(self._stored_prefix(glob_prefix(g)) for g in self.queue_globs)
        )
        return NameFilter(prefixes=prefixes, admits=self.owns_queue)

    def _stored_prefix(self, local_prefix: str) -> str:
        # Not qualify(): a prefix is no name; one too long for the namespace matches nothing.
        if self.namespace == DEFAULT_NAMESPACE:
            return local_prefix
        return f"{self.namespace}{SEPARATOR}{local_prefix}"

    def _strip(self, stored: str) -> str:
        local = self.local(stored)
        if local is None:  # a store filter let a foreign row through: refuse, never show it
            raise AssertionError("a row outside the caller's namespace reached the API")
        return local

    def unqualify_text(self, text: str) -> str:
        """An error message as the caller may see it: names quoted as 'ns/name' lose the
        prefix (store messages quote names with repr)."""
        if self.namespace == DEFAULT_NAMESPACE:
            return text
        for quote in ("'", '"'):
            text = text.replace(f"{quote}{self.namespace}{SEPARATOR}", quote)
        return text

    # -- values in ---------------------------------------------------------------------------

    def spec_in(self, spec: JobSpecInput, path: str = "job.") -> JobSpecInput:
        return qualify_spec(self.namespace, spec, path)

    def task_type_ref_in(self, ref: TaskTypeRef) -> TaskTypeRef:
        return dataclasses.replace(ref, name=self.qualify(ref.name, "task_types[].name"))

    def leased_in(self, job: LeasedJob) -> LeasedJob:
        return dataclasses.replace(
            job, queue=self.qualify(job.queue), task_type=self.qualify(job.task_type)
        )

    def queue_config_in(self, config: QueueConfig) -> QueueConfig:
        return dataclasses.replace(config, name=self.qualify(config.name, "queue.name"))

    def schedule_spec_in(self, spec: ScheduleSpec) -> ScheduleSpec:
        return dataclasses.replace(spec, name=self.qualify(spec.name, "schedule.name"))

    # -- values out --------------------------------------------------------------------------

    def _named_out(self, value: Named) -> Named:
        queue, task_type = self._strip(value.queue), self._strip(value.task_type)
        if queue == value.queue and task_type == value.task_type:
            return value  # the default namespace: nothing to copy (a copy costs ~10 us here)
        return dataclasses.replace(value, queue=queue, task_type=task_type)

    def enqueued_out(self, result: EnqueueResult) -> EnqueueResult:
        return self._named_out(result)

    def job_out(self, job: Job) -> Job:
        return self._named_out(job)

    def leased_out(self, job: LeasedJob) -> LeasedJob:
        return self._named_out(job)

    def queue_config_out(self, config: QueueConfig) -> QueueConfig:
        return dataclasses.replace(config, name=self._strip(config.name))

    def queue_out(self, queue: Queue) -> Queue:
        return dataclasses.replace(queue, config=self.queue_config_out(queue.config))

    def schedule_spec_out(self, spec: ScheduleSpec) -> ScheduleSpec:
        return dataclasses.replace(spec, name=self._strip(spec.name))

    def schedule_out(self, schedule: Schedule) -> Schedule:
        return dataclasses.replace(schedule, spec=self.schedule_spec_out(schedule.spec))

    def task_type_out(self, task_type: TaskType) -> TaskType:
        return dataclasses.replace(task_type, name=self._strip(task_type.name))
