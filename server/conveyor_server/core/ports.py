"""The one storage seam. The core talks to a Store and nothing else; each method is one named
transition of the job state machine, takes small frozen params and returns domain values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Generic, Protocol, TypeVar

from conveyor_server.core.contracts import TaskType
from conveyor_server.core.model import (
    DueTimes,
    EnqueueResult,
    HeartbeatParams,
    HeartbeatResult,
    Job,
    JobPage,
    LeaseBatch,
    LeaseHolder,
    LeaseParams,
    ListJobsParams,
    Micros,
    NameFilter,
    NewJob,
    Queue,
    QueueConfig,
    ReceiptParams,
    Transition,
    TransitionResult,
    Version,
)
from conveyor_server.core.schedules import Schedule
from conveyor_server.errors import ConveyorError

ReceiptDecider = Callable[[LeaseHolder, ReceiptParams, Micros, Random], Transition]


@dataclass(frozen=True, slots=True)
class PlannedFires:
    """What a due schedule enqueues now: (fire time, job) pairs, and when it fires next."""

    fires: list[tuple[Micros, NewJob]]
    next_fire_at: Micros


FirePlanner = Callable[[Schedule, Micros], PlannedFires]


@dataclass(frozen=True, slots=True)
class Fire:
    schedule: str
    fire_at: Micros
    job_id: str | None  # None: skipped (overlap) or refused
    enqueued: EnqueueResult | None


ExpiryDecider = Callable[[LeaseHolder, Micros, Random], Transition]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Isolated:
    """A row a background service could not process: handled alone, marked so that it is not
    tried again at once (a job FAILED, a schedule paused, a queue's buckets reset), logged."""

    kind: str  # "job", "schedule" or "queue"
    name: str  # the job id, schedule name or queue name
    reason: str  # the error's type and a short prefix of its message


@dataclass(frozen=True, slots=True)
class Processed(Generic[T]):
    """What a background batch did, and the rows it had to set aside to do it."""

    done: T
    isolated: list[Isolated]


class Store(Protocol):
    async def open(self) -> None:
        """Connects and migrates the schema to the newest revision."""
        ...

    async def close(self) -> None: ...

    async def enqueue(
        self, jobs: Sequence[NewJob], *, atomic: bool, max_depth: int
    ) -> list[EnqueueResult | ConveyorError]:
        """Stores jobs; returns only after the commit that holds them.

        atomic=True (EnqueueBatch): all or none, so any error is raised and nothing is stored.
        atomic=False: each job is judged on its own. Concurrent calls share one transaction
        (group commit)."""
        ...

    async def lease(self, params: LeaseParams) -> LeaseBatch:
        """Claims up to max_jobs AVAILABLE jobs with fresh lease tokens, within each queue's
        pause, concurrency cap and rate limits."""
        ...

    async def heartbeat(
        self, items: Sequence[HeartbeatParams], now: Micros
    ) -> list[HeartbeatResult | ConveyorError]: ...

    async def settle(
        self, receipts: Sequence[ReceiptParams], now: Micros, decide: ReceiptDecider
    ) -> list[TransitionResult | ConveyorError]:
        """Applies worker receipts, fenced by lease token; a repeated receipt changes nothing."""
        ...

    async def rescue_expired(
        self, now: Micros, limit: int, decide: ExpiryDecider
    ) -> Processed[list[TransitionResult]]:
        """Ends leases that ran out without a receipt; a job whose next step cannot be
        computed is isolated (moved to FAILED) instead of stopping the rest."""
        ...

    async def promote_due(self, now: Micros, limit: int) -> list[TransitionResult]:
        """Makes SCHEDULED jobs whose time has come AVAILABLE."""
        ...

    async def cancel(self, job_id: str, now: Micros) -> Job: ...

    async def retry(self, job_id: str, now: Micros) -> Job: ...

    async def get_job(self, job_id: str) -> Job: ...

    async def list_jobs(self, params: ListJobsParams) -> JobPage:
        """One page, newest first; `more` when the page is full or cut short by its size."""
        ...

    async def get_queue(self, name: str, now: Micros) -> Queue: ...

    async def list_queues(
        self,
        after: str | None,
        limit: int,
        now: Micros,
        *,
        namespace: str | None = None,
        names: NameFilter | None = None,
    ) -> list[Queue]:
        """`namespace`: only its queues (core/namespaces.py); None: every namespace's.
        `names`: only the queues it admits, tested before their statistics are read; the
        page is still `limit` long while more admitted queues follow."""
        ...

    async def list_push_queues(self, after: str | None, limit: int) -> list[QueueConfig]:
        """The settings of the queues with a push target (paused ones too), by name, without
        counting their jobs: what the pusher reads every few seconds."""
        ...

    async def update_queue(
        self, name: str, change: Callable[[QueueConfig], QueueConfig], now: Micros
    ) -> Queue:
        """Creates the queue if needed and applies `change` to its settings atomically."""
        ...

    async def register_task_type(self, task_type: TaskType) -> TaskType:
        """Stores a version once; the same again returns the stored one; different
        descriptors under a stored version raise AlreadyExists."""
        ...

    async def get_task_type(self, name: str, version: Version | None) -> TaskType:
        """One version (the highest when version is None); NotFound otherwise."""
        ...

    async def find_task_type(self, name: str, version: Version) -> TaskType | None: ...

    async def list_task_types(
        self, after: tuple[str, Version] | None, limit: int, *, namespace: str | None = None
    ) -> list[TaskType]: ...

    async def create_schedule(self, schedule: Schedule, now: Micros) -> Schedule: ...

    async def get_schedule(self, name: str) -> Schedule: ...

    async def list_schedules(
        self,
        after: str | None,
        limit: int,
        *,
        namespace: str | None = None,
        visible: Callable[[Schedule], bool] | None = None,
    ) -> list[Schedule]:
        """`visible`: only the schedules it accepts; the page is still `limit` long while
        more accepted schedules follow."""
        ...

    async def update_schedule(
        self, name: str, change: Callable[[Schedule], Schedule]
    ) -> Schedule: ...

    async def delete_schedule(
        self, name: str, *, visible: Callable[[Schedule], bool] | None = None
    ) -> None:
        """NotFound if there is no such schedule, or `visible` refuses it (then it stays)."""
        ...

    async def fire_schedules(
        self, now: Micros, limit: int, planner: FirePlanner, max_depth: int
    ) -> Processed[list[Fire]]:
        """Enqueues the fires of due schedules, each fire at most once, and moves each
        schedule to its next fire time, in one transaction; a schedule that cannot fire is
        isolated (paused) instead of stopping the rest."""
        ...

    async def next_schedule_fire(self) -> Micros | None: ...

    async def prune(self, now: Micros, limit: int) -> Processed[int]:
        """Deletes up to `limit` finished jobs past retention; returns how many. A queue
        whose settings break the arithmetic is isolated (its buckets reset, its jobs kept)."""
        ...

    async def claim_leadership(self, service: str, holder: str, now: Micros, until: Micros) -> bool:
        """Makes `holder` the leader of `service` until `until` if nobody else holds it at
        `now` (none yet, its lease expired, or `holder` itself renewing); True if it now
        leads. One statement, so it is atomic with any number of coordinators."""
        ...

    async def resign_leadership(self, service: str, holder: str) -> None:
        """Gives up `service` if `holder` leads it, so another may take it at once."""
        ...

    async def due_times(self) -> DueTimes:
        """The earliest SCHEDULED due time and the earliest lease expiry, for the waker."""
        ...
