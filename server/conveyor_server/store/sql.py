"""The SQL store: SQLAlchemy Core on SQLite (the embedded default).

Every write goes through one writer that owns one connection in its own thread. It takes
whatever operations are waiting, runs them in one transaction in one thread hop, commits once
and only then answers each caller (group commit): many producers sending one job each share
one fsync, and no caller hears OK before its job is on disk. Operations work on whole batches
with executemany. Reads run on a few reader threads; SQLite's WAL mode lets them read beside
the writer. See store/threads.py for why whole operations, not statements, cross threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from conveyor_server.core.contracts import TaskType
from conveyor_server.core.model import (
    EMPTY_QUEUE_STATS,
    DueTimes,
    EnqueueResult,
    HeartbeatParams,
    HeartbeatResult,
    Job,
    JobPage,
    JobState,
    LeaseBatch,
    LeaseParams,
    ListJobsParams,
    Micros,
    NewJob,
    Queue,
    QueueConfig,
    ReceiptParams,
    ReplyLimit,
    TransitionResult,
    Version,
    fit_in_reply,
    listed_job_size,
    resolve_settings,
)
from conveyor_server.core.schedules import OverlapPolicy, Schedule
from conveyor_server.errors import (
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from conveyor_server.store import contracts as contracts_sql
from conveyor_server.store import dialects
from conveyor_server.store import queues as queues_sql
from conveyor_server.store import schedules as schedules_sql
from conveyor_server.store.base import (
    ExpiryDecider,
    Fire,
    FirePlanner,
    Isolated,
    Processed,
    ReceiptDecider,
)
from conveyor_server.store.lock import DatabaseLock
from conveyor_server.store.migrate import upgrade_to_head
from conveyor_server.store.prepared import Prepared, constant
from conveyor_server.store.rows import (
    as_replay,
    attempt_from_row,
    chunks,
    claimed_job,
    conflicting_receipt,
    fencing_problem,
    fresh_result,
    history_row,
    job_from_row,
    job_row,
    keyed_outcome,
    lease_holder,
    lease_tokens,
    leased_job_size,
    receipt_digest,
    repeated_receipt,
    transition_params,
    transition_result,
)
from conveyor_server.store.schema import (
    FINISHED,
    job_attempts,
    jobs,
    queues,
    schedule_fires,
    schedules,
    throttle_buckets,
)
from conveyor_server.store.threads import DatabaseThread, ReaderPool

log = structlog.get_logger("conveyor.store")

T = TypeVar("T")
R = TypeVar("R")

# The error_type of a job the reaper had to set aside (see SqlStore._fail_unrescuable).
ISOLATED_ERROR_TYPE = "conveyor.Isolated"
# Errors that come from one row's values, not from the database: arithmetic on an absurd
# setting, a value that no column can hold.
_ROW_FAULT_TYPES = (ArithmeticError, ValueError, TypeError, LookupError)
_REASON_PREFIX = 200
# While the store cannot write, how often it tries a probe write to learn it can again.
WRITE_PROBE_INTERVAL_SECONDS = 1.0
# A probe row larger than a page (4 KiB by default), so that it needs one.
_PROBE_BYTES = 8192

# Rows a size-limited lease reads before it knows whether the reply is full.
_FIRST_READ_STEP = 64

# Fire records only guard against firing twice; by this age the schedule has long moved on.
FIRE_MEMORY: Micros = 7 * 24 * 3600 * 1_000_000


_JOB_COLUMNS = list(jobs.c)
_HOLDER_COLUMNS = [
    jobs.c.id,
    jobs.c.queue,
    jobs.c.task_type,
    jobs.c.state,
    jobs.c.run_at,
    jobs.c.lease_token,
    jobs.c.lease_expires_at,
    jobs.c.lease_duration,
    jobs.c.attempt,
    jobs.c.max_attempts,
    jobs.c.retry_initial_backoff,
    jobs.c.retry_multiplier,
    jobs.c.retry_max_backoff,
    jobs.c.retry_jitter,
    jobs.c.leased_by,
    jobs.c.leased_at,
    jobs.c.cancel_requested,
    jobs.c.receipt_digest,
]

_CLAIM = Prepared(
    sa.update(jobs)
    .where(jobs.c.id == sa.bindparam("b_id"), jobs.c.state == constant(JobState.AVAILABLE))
    .values(
        state=constant(JobState.LEASED),
        attempt=jobs.c.attempt + constant(1),
        lease_token=sa.bindparam("b_token"),
        leased_by=sa.bindparam("b_worker"),
        leased_at=sa.bindparam("b_now"),
        lease_expires_at=jobs.c.lease_duration + sa.bindparam("b_now"),
    )
)

_FENCED = sa.and_(
    jobs.c.id == sa.bindparam("b_id"),
    jobs.c.lease_token == sa.bindparam("b_token"),
    jobs.c.state == constant(JobState.LEASED),
)

_EXTEND = Prepared(
    sa.update(jobs)
    .where(_FENCED)
    .values(
        lease_expires_at=sa.bindparam("b_expires"),
        checkpoint=sa.func.coalesce(
            sa.bindparam("b_checkpoint", type_=sa.LargeBinary), jobs.c.checkpoint
        ),
    )
)

_TRANSITION_VALUES: dict[str, Any] = {
    "state": sa.bindparam("b_state"),
    "run_at": sa.func.coalesce(sa.bindparam("b_run_at", type_=sa.BigInteger), jobs.c.run_at),
    "attempt": jobs.c.attempt + sa.bindparam("b_attempt_delta"),
    "result": sa.bindparam("b_result", type_=sa.LargeBinary),
    "error_message": sa.bindparam("b_error_message", type_=sa.Text),
    "error_type": sa.bindparam("b_error_type", type_=sa.String),
    "error_non_retryable": sa.bindparam("b_error_non_retryable", type_=sa.Boolean),
    "finished_at": sa.bindparam("b_finished_at", type_=sa.BigInteger),
    "lease_expires_at": sa.null(),
    "lease_token": sa.bindparam("b_new_token", type_=sa.String),
    "receipt_digest": sa.bindparam("b_receipt_digest", type_=sa.String),
}

_APPLY_TRANSITION = Prepared(sa.update(jobs).where(_FENCED).values(**_TRANSITION_VALUES))
_RECORD_ATTEMPT = Prepared(
    sa.insert(job_attempts).values(
        {c.name: sa.bindparam(c.name) for c in job_attempts.c if c.name != "id"}
    )
)


@dataclass
class _WriteOp:
    """One caller's write, waiting for the writer; `weight` bounds a group's size."""

    run: Callable[[Connection], Any] | None
    future: asyncio.Future[Any]
    weight: int = 1
    enqueue_jobs: Sequence[NewJob] = ()
    atomic: bool = False
    max_depth: int = 0
    results: list[Any] = field(default_factory=list)
    # False for writes whose loss in a power cut is harmless under at-least-once delivery
    # (a lease or a lease extension: the job is simply leased again).
    must_sync: bool = True


class SqlStore:
    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        max_write_batch: int = 1000,
        rng: Random | None = None,
        on_write_health: Callable[[bool], None] | None = None,
    ) -> None:
        """`on_write_health(False)` is called (on the event loop) when a write fails because
        the storage did (a full disk, an I/O error), and `on_write_health(True)` once a probe
        write succeeds again; the composition root turns these into the health status."""
        self._url = url
        self._on_write_health = on_write_health
        self._writable = True
        self._storage_failed = False  # set in the writer thread, read after its hop returns
        self._probe_task: asyncio.Task[None] | None = None
        self._lock: DatabaseLock | None = None
        self._synchronous = sqlite_synchronous
        self._max_write_batch = max_write_batch
        self._rng = rng or Random()
        self._writer: DatabaseThread | None = None
        self._readers: ReaderPool | None = None
        self._queue: asyncio.Queue[_WriteOp | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._closed = False
        self._job_defaults = queues_sql.JobDefaults()
        self._declarations = contracts_sql.WorkerDeclarations()
        self._current_sync = sqlite_synchronous.upper()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        url = dialects.sync_url(self._url)
        path = dialects.lock_path(url)
        if path is not None:
            lock = DatabaseLock(path, str(path.with_suffix("")))
            lock.acquire(f"pid {os.getpid()}, starting")
            self._lock = lock
        try:
            await self._open_database(url)
        except BaseException:
            self._release_lock()
            raise

    def describe_owner(self, owner: str) -> None:
        """Names this coordinator in the SQLite lock file (what a refused second one prints)."""
        if self._lock is not None:
            self._lock.describe(owner)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _open_database(self, url: str) -> None:
        self._writer = DatabaseThread(
            dialects.create_writer_engine(url, self._synchronous), "conveyor-writer"
        )
        self._readers = ReaderPool(dialects.create_reader_engine(url, self._synchronous), 2)
        await self._writer.run(_migrate)
        await self._writer.run(_repair_orphaned_queues)
        self._writer_task = asyncio.create_task(self._writer_loop(), name="conveyor-store-writer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
        for threads in (self._writer, self._readers):
            if threads is not None:
                await threads.close()
        self._release_lock()

    async def set_max_page_count(self, pages: int) -> int:
        """Test hook: caps the SQLite file at `pages` pages (at least its current size), which
        is a full disk without root tricks; returns the cap now in force."""

        def run(conn: Connection) -> int:
            driver = conn.connection.driver_connection
            assert driver is not None
            row = driver.execute(f"PRAGMA max_page_count={int(pages)}").fetchone()
            return int(row[0])

        assert self._writer is not None
        return await self._writer.run(run)

    # -- the writer --------------------------------------------------------------------------

    async def _submit(self, op: _WriteOp) -> Any:
        if self._closed:
            raise Unavailable("the coordinator is shutting down")
        await self._queue.put(op)
        return await op.future

    async def _write(
        self, run: Callable[[Connection], Any], weight: int = 1, *, must_sync: bool = True
    ) -> Any:
        loop = asyncio.get_running_loop()
        op = _WriteOp(run=run, future=loop.create_future(), weight=weight, must_sync=must_sync)
        return await self._submit(op)

    def _sync_level(self, conn: Connection, must_sync: bool) -> None:
        """Enqueues, receipts and admin changes commit at the configured level (FULL: on
        disk before the reply); a group of only leases and heartbeats may skip the fsync.
        WAL keeps commits in order, so a later synced commit makes the earlier ones durable."""
        if conn.dialect.name != "sqlite":
            return
        configured = self._synchronous.upper()
        relaxed = "NORMAL" if configured in ("FULL", "EXTRA") else configured
        level = configured if must_sync else relaxed
        if level != self._current_sync:
            # Straight to the driver: through SQLAlchemy the statement would autobegin a
            # transaction (BEGIN IMMEDIATE), and SQLite refuses this pragma inside one.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(f"PRAGMA synchronous={level}")
            self._current_sync = level

    async def _read(self, work: Callable[[Connection], T]) -> T:
        assert self._readers is not None
        return await self._readers.run(work)

    async def _writer_loop(self) -> None:
        assert self._writer is not None
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            weight = first.weight
            stop = False
            while weight < self._max_write_batch and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                    break
                group.append(op)
                weight += op.weight
            try:
                errors = await self._writer.run(functools.partial(self._commit_group, group=group))
            except Exception as exc:  # the thread itself failed; tell everyone
                errors = [exc] * len(group)
            for op, error in zip(group, errors, strict=True):
                _settle_future(op, error)
            if self._storage_failed:
                self._storage_failed = False
                self._write_health(False)
            if stop:
                return

    # -- write health ------------------------------------------------------------------------

    def _write_health(self, writable: bool) -> None:
        if writable == self._writable or self._closed:
            return
        self._writable = writable
        log.warning("store.write_health", writable=writable)
        if self._on_write_health is not None:
            try:
                self._on_write_health(writable)
            except Exception as exc:  # an observer's failure must not stop the writer
                log.error("store.write_health_observer_failed", error=repr(exc))
        if not writable and self._probe_task is None:
            self._probe_task = asyncio.create_task(self._probe(), name="conveyor-store-probe")

    async def _probe(self) -> None:
        """While writes fail for want of storage, tries a small write now and then; the store
        is healthy again when one commits. Ordinary writes cannot tell: a small one may fit
        where a job does not."""
        try:
            while not self._closed:
                await asyncio.sleep(WRITE_PROBE_INTERVAL_SECONDS)
                try:
                    await self._write(_probe_write)
                except Exception:
                    continue  # still failing; the failure was logged
                self._probe_task = None
                self._write_health(True)
                return
        finally:
            self._probe_task = None

    def _commit_group(self, conn: Connection, group: list[_WriteOp]) -> list[BaseException | None]:
        """Runs in the writer thread; returns each operation's failure, if any."""
        self._sync_level(conn, any(op.must_sync for op in group))
        try:
            with conn.begin():
                self._apply_group(conn, group)
        except Exception as exc:
            self._forget_transaction()
            if len(group) > 1:
                # One operation broke the shared transaction: run each alone so that the
                # others still succeed and only the culprit hears of the error.
                errors: list[BaseException | None] = []
                for op in group:
                    op.results.clear()
                    errors.extend(self._commit_group(conn, [op]))
                return errors
            log.error("store.write_failed", error=repr(exc))
            fault = dialects.storage_fault(exc)
            if fault is not None:
                self._storage_failed = True
                return [fault]
            return [exc]
        self._job_defaults.committed()
        self._declarations.committed()
        return [None] * len(group)

    def _forget_transaction(self) -> None:
        """Caches drop whatever the rolled-back transaction taught them."""
        self._job_defaults.rolled_back()
        self._declarations.rolled_back()

    def _apply_group(self, conn: Connection, group: list[_WriteOp]) -> None:
        # Batches first, one by one, so that an all-or-none batch that fails and is undone can
        # never be what a single enqueue in the same group deduplicated against.
        singles: list[_WriteOp] = []
        for op in group:
            if op.run is not None:
                try:
                    op.results = [op.run(conn)]
                except ConveyorError as err:
                    # Operations check before they write, so a refusal leaves nothing behind
                    # in the shared transaction.
                    op.results = [err]
            elif op.atomic:
                op.results = [self._insert_atomic(conn, op.enqueue_jobs, op.max_depth)]
            else:
                singles.append(op)
        if singles:
            new_jobs = [job for op in singles for job in op.enqueue_jobs]
            outcomes = self._insert_jobs(conn, new_jobs, singles[0].max_depth)
            start = 0
            for op in singles:
                op.results = [outcomes[start : start + len(op.enqueue_jobs)]]
                start += len(op.enqueue_jobs)

    # -- enqueue -----------------------------------------------------------------------------

    async def enqueue(
        self, jobs_: Sequence[NewJob], *, atomic: bool, max_depth: int
    ) -> list[EnqueueResult | ConveyorError]:
        loop = asyncio.get_running_loop()
        op = _WriteOp(
            run=None,
            future=loop.create_future(),
            weight=max(1, len(jobs_)),
            enqueue_jobs=jobs_,
            atomic=atomic,
            max_depth=max_depth,
        )
        outcome = await self._submit(op)
        if isinstance(outcome, ConveyorError):
            raise outcome
        result: list[EnqueueResult | ConveyorError] = outcome
        return result

    def _insert_atomic(
        self, conn: Connection, new_jobs: Sequence[NewJob], max_depth: int
    ) -> list[EnqueueResult | ConveyorError] | ConveyorError:
        outcomes = self._insert_jobs(conn, new_jobs, max_depth)
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, ConveyorError):
                inserted = [
                    o.job_id
                    for o in outcomes
                    if isinstance(o, EnqueueResult) and not o.deduplicated
                ]
                for chunk in chunks(inserted):
                    conn.execute(sa.delete(jobs).where(jobs.c.id.in_(chunk)))
                return type(outcome)(f"jobs[{index}]: {outcome}; no job of the batch was stored")
        return outcomes

    def _insert_jobs(
        self, conn: Connection, new_jobs: Sequence[NewJob], max_depth: int
    ) -> list[EnqueueResult | ConveyorError]:
        depths = self._child_depths(conn, new_jobs, max_depth)
        configs = self._job_defaults.get(conn, {j.queue for j in new_jobs}, new_jobs[0].created_at)
        depths = self._refuse_unregistered(conn, new_jobs, configs, depths)
        rows = [
            job_row(job, depth, resolve_settings(job.settings, configs[job.queue].defaults))
            for job, depth in zip(new_jobs, depths, strict=True)
            if not isinstance(depth, ConveyorError)
        ]
        if rows:
            dialects.insert_ignoring_duplicate_keys(conn.dialect).executemany(conn, rows)
        keyed = [
            j
            for j, d in zip(new_jobs, depths, strict=True)
            if j.idempotency_key and isinstance(d, int)
        ]
        holders = self._key_holders(conn, keyed)
        outcomes: list[EnqueueResult | ConveyorError] = []
        for job, depth in zip(new_jobs, depths, strict=True):
            if isinstance(depth, ConveyorError):
                outcomes.append(depth)
            elif job.idempotency_key:
                outcomes.append(keyed_outcome(job, holders[(job.queue, job.idempotency_key)]))
            else:
                outcomes.append(fresh_result(job))
        return outcomes

    def _refuse_unregistered(
        self,
        conn: Connection,
        new_jobs: Sequence[NewJob],
        configs: dict[str, QueueConfig],
        depths: list[int | ConveyorError],
    ) -> list[int | ConveyorError]:
        """In a strict queue every job names a registered task type version."""
        strict = [configs[j.queue].strict_task_types for j in new_jobs]
        if not any(strict):
            return depths
        wanted = {
            (j.task_type, j.task_version)
            for j, s in zip(new_jobs, strict, strict=True)
            if s and j.task_version is not None
        }
        known = contracts_sql.registered(conn, wanted)
        checked: list[int | ConveyorError] = []
        for job, is_strict, depth in zip(new_jobs, strict, depths, strict=True):
            if not is_strict or isinstance(depth, ConveyorError):
                checked.append(depth)
            elif job.task_version is None:
                checked.append(
                    InvalidArgument(
                        f"job.task_version is required: queue {job.queue!r} is strict, so "
                        "every job names a registered task type version"
                    )
                )
            elif (job.task_type, job.task_version) not in known:
                checked.append(
                    FailedPrecondition(
                        f"task type {job.task_type} {job.task_version} is not registered and "
                        f"queue {job.queue!r} is strict: RegisterTaskType first"
                    )
                )
            else:
                checked.append(depth)
        return checked

    def _child_depths(
        self, conn: Connection, new_jobs: Sequence[NewJob], max_depth: int
    ) -> list[int | ConveyorError]:
        parent_ids = sorted({j.parent_job_id for j in new_jobs if j.parent_job_id})
        parent_depth: dict[str, int] = {}
        for chunk in chunks(parent_ids):
            result = conn.execute(sa.select(jobs.c.id, jobs.c.depth).where(jobs.c.id.in_(chunk)))
            parent_depth.update({row.id: row.depth for row in result})
        depths: list[int | ConveyorError] = []
        for job in new_jobs:
            if not job.parent_job_id:
                depths.append(0)
            elif job.parent_job_id not in parent_depth:
                depths.append(NotFound(f"parent_job_id {job.parent_job_id!r}: no such job"))
            elif parent_depth[job.parent_job_id] + 1 > max_depth:
                depths.append(
                    FailedPrecondition(
                        f"job depth would be {parent_depth[job.parent_job_id] + 1}, over the "
                        f"maximum of {max_depth}: parent_job_id chains this deep usually mean "
                        "a job that enqueues itself without end (raise --max-depth if intended)"
                    )
                )
            else:
                depths.append(parent_depth[job.parent_job_id] + 1)
        return depths

    def _key_holders(self, conn: Connection, keyed: Sequence[NewJob]) -> dict[tuple[str, str], Any]:
        keys = sorted({j.idempotency_key for j in keyed if j.idempotency_key})
        holders: dict[tuple[str, str], Any] = {}
        for chunk in chunks(keys):
            result = conn.execute(
                sa.select(
                    jobs.c.id,
                    jobs.c.queue,
                    jobs.c.idempotency_key,
                    jobs.c.task_type,
                    jobs.c.payload,
                    jobs.c.state,
                    jobs.c.run_at,
                ).where(jobs.c.idempotency_key.in_(chunk))
            )
            for row in result:
                holders[(row.queue, row.idempotency_key)] = row
        return holders

    # -- lease -------------------------------------------------------------------------------

    async def lease(self, params: LeaseParams) -> LeaseBatch:
        result: LeaseBatch = await self._write(
            lambda conn: self._claim(conn, params), weight=params.max_jobs, must_sync=False
        )
        return result

    def _claim(self, conn: Connection, params: LeaseParams) -> LeaseBatch:
        self._declarations.record(conn, params)
        plan = queues_sql.plan_dispatch(conn, params)
        rows, left_behind = self._rows_that_fit(conn, plan, params.reply_limit)
        chosen = plan.chosen
        if not chosen:
            return LeaseBatch(
                jobs=[], retry_at=plan.retry_at, dry_until=plan.dry_until, left_behind=left_behind
            )
        queues_sql.record_dispatch(conn, plan, params.now)
        tokens = lease_tokens(chosen)
        _CLAIM.executemany(
            conn,
            [
                {
                    "b_id": job_id,
                    "b_token": token,
                    "b_worker": params.worker_id,
                    "b_now": params.now,
                }
                for job_id, token in tokens.items()
            ],
        )
        # Built from the rows read before the claim, with what _CLAIM set: no second read.
        leased = [claimed_job(rows[job_id], tokens[job_id], params.now) for job_id in chosen]
        return LeaseBatch(
            jobs=leased, retry_at=plan.retry_at, dry_until=plan.dry_until, left_behind=left_behind
        )

    def _rows_that_fit(
        self, conn: Connection, plan: queues_sql.DispatchPlan, limit: ReplyLimit | None
    ) -> tuple[dict[str, sa.Row[Any]], bool]:
        """Reads the chosen jobs and cuts the plan to those that fit in one reply (before
        anything is claimed, so the rest stay AVAILABLE); True when some were left out. Reads
        in dispatch order, in growing steps, so a reply that fills up early stops the reading
        too (a lease of many large jobs does not read them all)."""
        if limit is None:
            return self._rows_by_id(conn, plan.chosen, _JOB_COLUMNS), False
        rows: dict[str, sa.Row[Any]] = {}
        if len(plan.chosen) <= _FIRST_READ_STEP:
            rows = self._rows_by_id(conn, plan.chosen, _JOB_COLUMNS)
            if sum(map(leased_job_size, rows.values())) <= limit.budget:
                return rows, False  # the common case: everything fits
        sizes: list[int] = []
        kept: list[int] = []
        full = False
        step = _FIRST_READ_STEP
        while len(sizes) < len(plan.chosen) and not full:
            part = plan.chosen[len(sizes) : len(sizes) + step]
            missing = [job_id for job_id in part if job_id not in rows]
            rows.update(self._rows_by_id(conn, missing, _JOB_COLUMNS))
            sizes.extend(leased_job_size(rows[job_id]) for job_id in part)
            kept, full = fit_in_reply(sizes, limit)
            step *= 4
        if len(kept) == len(plan.chosen):
            return rows, False
        for job_id, size in zip(plan.chosen, sizes, strict=False):
            if size > limit.hard_limit:
                log.error("lease.job_too_large", job_id=job_id, size=size)
        plan.chosen = [plan.chosen[i] for i in kept]
        plan.keys_by_job = {job_id: plan.keys_by_job[job_id] for job_id in plan.chosen}
        # What the plan knew of empty buckets assumed every job it chose; claim it no more.
        plan.dry_until = {}
        return rows, True

    # -- heartbeat ---------------------------------------------------------------------------

    async def heartbeat(
        self, items: Sequence[HeartbeatParams], now: Micros
    ) -> list[HeartbeatResult | ConveyorError]:
        result: list[HeartbeatResult | ConveyorError] = await self._write(
            lambda conn: self._extend(conn, items, now), weight=len(items), must_sync=False
        )
        return result

    def _extend(
        self, conn: Connection, items: Sequence[HeartbeatParams], now: Micros
    ) -> list[HeartbeatResult | ConveyorError]:
        rows = self._rows_by_id(conn, [i.job_id for i in items], _HOLDER_COLUMNS)
        outcomes: list[HeartbeatResult | ConveyorError] = []
        updates = []
        for item in items:
            row = rows.get(item.job_id)
            problem = fencing_problem(item.job_id, item.lease_token, row, now)
            if problem is not None or row is None:
                outcomes.append(problem or NotFound(f"job {item.job_id!r} not found"))
                continue
            wanted = now + (item.extend_by if item.extend_by is not None else row.lease_duration)
            # "Extend" never shortens: a heartbeat asking for less keeps the current expiry.
            expires = max(row.lease_expires_at, wanted)
            updates.append(
                {
                    "b_id": item.job_id,
                    "b_token": item.lease_token,
                    "b_expires": expires,
                    "b_checkpoint": item.checkpoint,
                }
            )
            outcomes.append(
                HeartbeatResult(lease_expires_at=expires, cancel_requested=row.cancel_requested)
            )
        if updates:
            _EXTEND.executemany(conn, updates)
        return outcomes

    # -- receipts and expiry -----------------------------------------------------------------

    async def settle(
        self, receipts: Sequence[ReceiptParams], now: Micros, decide: ReceiptDecider
    ) -> list[TransitionResult | ConveyorError]:
        result: list[TransitionResult | ConveyorError] = await self._write(
            lambda conn: self._settle(conn, receipts, now, decide), weight=len(receipts)
        )
        return result

    def _settle(
        self,
        conn: Connection,
        receipts: Sequence[ReceiptParams],
        now: Micros,
        decide: ReceiptDecider,
    ) -> list[TransitionResult | ConveyorError]:
        rows = self._rows_by_id(conn, [r.job_id for r in receipts], _HOLDER_COLUMNS)
        outcomes: list[TransitionResult | ConveyorError] = []
        updates: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        settled: dict[str, tuple[TransitionResult, str]] = {}
        for receipt in receipts:
            row = rows.get(receipt.job_id)
            replay = settled.get(receipt.job_id)
            digest = receipt_digest(receipt.outcome, receipt.result)
            if replay is not None and row is not None and row.lease_token == receipt.lease_token:
                done, applied = replay
                same = applied == digest
                outcomes.append(as_replay(done) if same else conflicting_receipt(row.id))
                continue
            if (
                row is not None
                and row.lease_token == receipt.lease_token
                and row.state != JobState.LEASED
            ):
                outcomes.append(repeated_receipt(row, receipt.outcome, receipt.result))
                continue
            problem = fencing_problem(receipt.job_id, receipt.lease_token, row, now)
            if problem is not None or row is None:
                outcomes.append(problem or NotFound(f"job {receipt.job_id!r} not found"))
                continue
            holder = lease_holder(row)
            transition = decide(holder, receipt, now, self._rng)
            updates.append(
                transition_params(
                    row.id, receipt.lease_token, transition, keep_token=True, digest=digest
                )
            )
            history.append(history_row(holder, now, transition.history_outcome, transition.error))
            done = transition_result(holder, transition)
            settled[receipt.job_id] = (done, digest)
            outcomes.append(done)
        if updates:
            _APPLY_TRANSITION.executemany(conn, updates)
            _RECORD_ATTEMPT.executemany(conn, history)
        return outcomes

    async def rescue_expired(
        self, now: Micros, limit: int, decide: ExpiryDecider
    ) -> Processed[list[TransitionResult]]:
        result: Processed[list[TransitionResult]] = await self._write(
            lambda conn: self._rescue(conn, now, limit, decide), weight=limit
        )
        return result

    def _rescue(
        self, conn: Connection, now: Micros, limit: int, decide: ExpiryDecider
    ) -> Processed[list[TransitionResult]]:
        rows = conn.execute(
            sa.select(*_HOLDER_COLUMNS)
            .where(jobs.c.state == JobState.LEASED, jobs.c.lease_expires_at <= now)
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        ).all()
        return self._isolating(
            conn,
            rows,
            lambda batch: self._rescue_rows(conn, batch, now, decide),
            lambda row, exc: self._fail_unrescuable(conn, row, now, exc),
        )

    def _rescue_rows(
        self, conn: Connection, rows: Sequence[Any], now: Micros, decide: ExpiryDecider
    ) -> list[TransitionResult]:
        outcomes: list[TransitionResult] = []
        updates: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        for row in rows:
            holder = lease_holder(row)
            transition = decide(holder, now, self._rng)
            # Clearing the token makes a late receipt from the lost lease fail its fencing check.
            updates.append(transition_params(row.id, row.lease_token, transition, keep_token=False))
            history.append(history_row(holder, now, transition.history_outcome, transition.error))
            outcomes.append(transition_result(holder, transition))
        if updates:
            _APPLY_TRANSITION.executemany(conn, updates)
            _RECORD_ATTEMPT.executemany(conn, history)
        return outcomes

    def _fail_unrescuable(
        self, conn: Connection, row: Any, now: Micros, exc: Exception
    ) -> tuple[list[TransitionResult], Isolated]:
        """An expired lease whose next step cannot be computed ends the job as FAILED, with
        the reason, so that the reaper does not meet it again."""
        reason = _reason(exc)
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == row.id, jobs.c.state == JobState.LEASED)
            .values(
                state=JobState.FAILED,
                finished_at=now,
                lease_token=None,
                lease_expires_at=None,
                error_type=ISOLATED_ERROR_TYPE,
                error_message=(
                    f"the coordinator could not compute this job's next attempt ({reason}); "
                    "it was failed so that lease rescue goes on for other jobs. Check its "
                    "retry settings, then RetryJob"
                ),
                error_non_retryable=True,
            )
        )
        failed = TransitionResult(
            job_id=row.id,
            queue=row.queue,
            task_type=row.task_type,
            attempt=row.attempt,
            worker_id=row.leased_by or "",
            state=JobState.FAILED,
            run_at=None,
        )
        return [failed], Isolated("job", row.id, reason)

    async def promote_due(self, now: Micros, limit: int) -> list[TransitionResult]:
        result: list[TransitionResult] = await self._write(
            lambda conn: self._promote(conn, now, limit), weight=limit
        )
        return result

    def _promote(self, conn: Connection, now: Micros, limit: int) -> list[TransitionResult]:
        due = (
            sa.select(jobs.c.id)
            .where(jobs.c.state == JobState.SCHEDULED, jobs.c.run_at <= now)
            .order_by(jobs.c.run_at)
            .limit(limit)
            .scalar_subquery()
        )
        result = conn.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(due))
            .values(state=JobState.AVAILABLE)
            .returning(jobs.c.id, jobs.c.queue, jobs.c.task_type, jobs.c.attempt)
        )
        return [
            TransitionResult(
                job_id=row.id,
                queue=row.queue,
                task_type=row.task_type,
                attempt=row.attempt,
                worker_id="",
                state=JobState.AVAILABLE,
                run_at=now,
            )
            for row in result
        ]

    # -- admin transitions -------------------------------------------------------------------

    async def cancel(self, job_id: str, now: Micros) -> Job:
        result: Job = await self._write(lambda conn: self._cancel(conn, job_id, now))
        return result

    def _cancel(self, conn: Connection, job_id: str, now: Micros) -> Job:
        job = self._load_job(conn, job_id)
        if job.state in (JobState.SCHEDULED, JobState.AVAILABLE):
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=JobState.CANCELLED, finished_at=now)
            )
        elif job.state == JobState.LEASED:
            # The worker hears of it in its next heartbeat; its receipt ends the job.
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True))
        elif job.state != JobState.CANCELLED:
            raise FailedPrecondition(
                f"job {job_id!r} already finished as {job.state.name}; there is nothing to cancel"
            )
        return self._load_job(conn, job_id)

    async def retry(self, job_id: str, now: Micros) -> Job:
        result: Job = await self._write(lambda conn: self._retry(conn, job_id, now))
        return result

    def _retry(self, conn: Connection, job_id: str, now: Micros) -> Job:
        job = self._load_job(conn, job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise FailedPrecondition(
                f"job {job_id!r} is {job.state.name}; only FAILED or CANCELLED jobs can be retried"
            )
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                state=JobState.AVAILABLE,
                attempt=0,
                run_at=now,
                finished_at=None,
                result=None,
                lease_token=None,
                lease_expires_at=None,
                cancel_requested=False,
            )
        )
        return self._load_job(conn, job_id)

    # -- queues ------------------------------------------------------------------------------

    async def get_queue(self, name: str, now: Micros) -> Queue:
        return await self._read(lambda conn: self._load_queue(conn, name, now))

    def _load_queue(self, conn: Connection, name: str, now: Micros) -> Queue:
        row = (queues_sql.queue_rows(conn, [name])).get(name)
        if row is None:
            # Every queue exists implicitly: one nobody named yet has the defaults and no jobs.
            return Queue(config=QueueConfig(name=name), stats=EMPTY_QUEUE_STATS)
        return Queue(
            config=queues_sql.queue_config(row),
            stats=queues_sql.queue_stats(conn, row, now),
        )

    async def list_queues(self, after: str | None, limit: int, now: Micros) -> list[Queue]:
        query = sa.select(queues.c.name).order_by(queues.c.name).limit(limit)
        if after:
            query = query.where(queues.c.name > after)

        def run(conn: Connection) -> list[Queue]:
            names = [row.name for row in conn.execute(query)]
            return [self._load_queue(conn, name, now) for name in names]

        return await self._read(run)

    async def update_queue(
        self, name: str, change: Callable[[QueueConfig], QueueConfig], now: Micros
    ) -> Queue:
        def run(conn: Connection) -> Queue:
            queues_sql.ensure_queues(conn, [name], now)
            row = (queues_sql.queue_rows(conn, [name]))[name]
            config = change(queues_sql.queue_config(row))
            conn.execute(
                sa.update(queues)
                .where(queues.c.name == name)
                .values(**queues_sql.queue_values(config))
            )
            self._job_defaults.forget(name)
            return self._load_queue(conn, name, now)

        result: Queue = await self._write(run)
        return result

    # -- task contracts ----------------------------------------------------------------------

    async def register_task_type(self, task_type: TaskType) -> TaskType:
        result: TaskType = await self._write(lambda conn: contracts_sql.register(conn, task_type))
        return result

    async def get_task_type(self, name: str, version: Version | None) -> TaskType:
        return await self._read(lambda conn: contracts_sql.load(conn, name, version))

    async def find_task_type(self, name: str, version: Version) -> TaskType | None:
        return await self._read(lambda conn: contracts_sql.find(conn, name, version))

    async def list_task_types(
        self, after: tuple[str, Version] | None, limit: int
    ) -> list[TaskType]:
        return await self._read(lambda conn: contracts_sql.page(conn, after, limit))

    # -- schedules ---------------------------------------------------------------------------

    async def create_schedule(self, schedule: Schedule, now: Micros) -> Schedule:
        def run(conn: Connection) -> Schedule:
            schedules_sql.insert(conn, schedule, now)
            return schedule

        result: Schedule = await self._write(run)
        return result

    async def get_schedule(self, name: str) -> Schedule:
        return await self._read(lambda conn: schedules_sql.load(conn, name))

    async def list_schedules(self, after: str | None, limit: int) -> list[Schedule]:
        return await self._read(lambda conn: schedules_sql.page(conn, after, limit))

    async def update_schedule(self, name: str, change: Callable[[Schedule], Schedule]) -> Schedule:
        def run(conn: Connection) -> Schedule:
            updated = change(schedules_sql.load(conn, name))
            schedules_sql.save(conn, updated)
            return updated

        result: Schedule = await self._write(run)
        return result

    async def delete_schedule(self, name: str) -> None:
        await self._write(lambda conn: schedules_sql.delete(conn, name))

    async def fire_schedules(
        self, now: Micros, limit: int, planner: FirePlanner, max_depth: int
    ) -> Processed[list[Fire]]:
        result: Processed[list[Fire]] = await self._write(
            lambda conn: self._fire(conn, now, limit, planner, max_depth), weight=limit
        )
        return result

    def _fire(
        self, conn: Connection, now: Micros, limit: int, planner: FirePlanner, max_depth: int
    ) -> Processed[list[Fire]]:
        rows = conn.execute(
            sa.select(schedules)
            .where(schedules.c.next_fire_at <= now, schedules.c.paused.is_(False))
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        ).all()

        def fire(batch: Sequence[Any]) -> list[Fire]:
            fired: list[Fire] = []
            for row in batch:
                schedule = schedules_sql.schedule_from_row(row)
                fired.extend(self._fire_one(conn, schedule, now, planner, max_depth))
            return fired

        return self._isolating(
            conn, rows, fire, lambda row, exc: self._pause_unfireable(conn, row.name, exc)
        )

    def _fire_one(
        self, conn: Connection, schedule: Schedule, now: Micros, planner: FirePlanner, depth: int
    ) -> list[Fire]:
        fired: list[Fire] = []
        plan = planner(schedule, now)
        last_fire_at, last_job_id = schedule.last_fire_at, schedule.last_job_id
        for fire_at, job in plan.fires:
            if not schedules_sql.claim_fire(conn, schedule.spec.name, fire_at, now):
                continue
            if self._previous_run_blocks(conn, schedule, last_job_id):
                fired.append(Fire(schedule.spec.name, fire_at, None, None))
                continue
            [outcome] = self._insert_jobs(conn, [job], depth)
            if isinstance(outcome, ConveyorError):
                log.error("schedule.fire_refused", schedule=schedule.spec.name, error=str(outcome))
                fired.append(Fire(schedule.spec.name, fire_at, None, None))
                continue
            schedules_sql.record_fire_job(conn, schedule.spec.name, fire_at, outcome.job_id)
            last_fire_at, last_job_id = fire_at, outcome.job_id
            fired.append(Fire(schedule.spec.name, fire_at, outcome.job_id, outcome))
        schedules_sql.save(
            conn,
            Schedule(
                spec=schedule.spec,
                next_fire_at=plan.next_fire_at,
                last_fire_at=last_fire_at,
                last_job_id=last_job_id,
            ),
        )
        return fired

    def _pause_unfireable(
        self, conn: Connection, name: str, exc: Exception
    ) -> tuple[list[Fire], Isolated]:
        """A schedule that cannot fire is paused (the log says why): UpdateSchedule with a
        sound job template and paused=false brings it back."""
        conn.execute(sa.update(schedules).where(schedules.c.name == name).values(paused=True))
        return [], Isolated("schedule", name, _reason(exc))

    def _previous_run_blocks(
        self, conn: Connection, schedule: Schedule, last_job_id: str | None
    ) -> bool:
        if schedule.spec.overlap_policy != OverlapPolicy.SKIP or last_job_id is None:
            return False
        state = conn.scalar(sa.select(jobs.c.state).where(jobs.c.id == last_job_id))
        return state is not None and not JobState(state).is_terminal

    async def next_schedule_fire(self) -> Micros | None:
        return await self._read(schedules_sql.next_fire_at)

    # -- retention ---------------------------------------------------------------------------

    async def prune(self, now: Micros, limit: int) -> Processed[int]:
        """Deletes up to `limit` finished jobs past their queue's retention, oldest first,
        with their history; also forgets old schedule fires and refilled throttle buckets."""
        result: Processed[int] = await self._write(
            lambda conn: self._prune(conn, now, limit), weight=limit
        )
        return result

    def _prune(self, conn: Connection, now: Micros, limit: int) -> Processed[int]:
        rows = conn.execute(sa.select(queues)).all()
        budget = [limit]  # jobs this run may still delete

        def prune(batch: Sequence[Any]) -> list[int]:
            counts = []
            for row in batch:
                counts.append(self._prune_queue(conn, row, now, budget[0]))
                budget[0] -= counts[-1]
            return counts

        def undone() -> None:
            budget[0] = limit

        def reset(row: Any, exc: Exception) -> tuple[list[int], Isolated]:
            conn.execute(sa.delete(throttle_buckets).where(throttle_buckets.c.queue == row.name))
            return [0], Isolated("queue", row.name, _reason(exc))

        pruned = self._isolating(conn, rows, prune, reset, before_retry=undone)
        conn.execute(
            sa.delete(schedule_fires).where(schedule_fires.c.created_at < now - FIRE_MEMORY)
        )
        return Processed(sum(pruned.done), pruned.isolated)

    def _prune_queue(self, conn: Connection, row: Any, now: Micros, limit: int) -> int:
        config = queues_sql.queue_config(row)
        deleted = 0
        for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            retention = config.retention.for_state(state)
            if deleted >= limit or retention >= now:  # nothing can have finished that long ago
                continue
            expired = (
                sa.select(jobs.c.id)
                .where(
                    jobs.c.queue == config.name,
                    jobs.c.state.in_(FINISHED),
                    jobs.c.state == state,
                    jobs.c.finished_at < now - retention,
                )
                .order_by(jobs.c.finished_at)
                .limit(limit - deleted)
            )
            ids = [r.id for r in conn.execute(expired)]
            for chunk in chunks(ids):
                conn.execute(sa.delete(job_attempts).where(job_attempts.c.job_id.in_(chunk)))
                conn.execute(sa.delete(jobs).where(jobs.c.id.in_(chunk)))
            deleted += len(ids)
        queues_sql.forget_full_buckets(conn, config, now)
        return deleted

    # -- isolating bad rows ------------------------------------------------------------------

    def _isolating(
        self,
        conn: Connection,
        rows: Sequence[R],
        run: Callable[[Sequence[R]], list[T]],
        isolate: Callable[[R, Exception], tuple[list[T], Isolated]],
        before_retry: Callable[[], None] | None = None,
    ) -> Processed[list[T]]:
        """Runs a background batch in a savepoint. If one row's values break it (arithmetic
        that overflows, a value no column holds), the batch is undone and each row runs in a
        savepoint of its own; a row that fails alone is handed to `isolate`, which marks it
        so that it is not met again, and the others go on. Database faults (a full disk, a
        lost connection) are not a row's fault: they fail the whole batch as before."""
        try:
            with conn.begin_nested():
                return Processed(run(rows), [])
        except Exception as exc:
            if not _row_fault(exc):
                raise
            self._forget_transaction()  # the savepoint's rollback undid what caches learned
        if before_retry is not None:
            before_retry()
        done: list[T] = []
        isolated: list[Isolated] = []
        for row in rows:
            try:
                with conn.begin_nested():
                    done.extend(run([row]))
                continue
            except Exception as exc:
                if not _row_fault(exc):
                    raise
                self._forget_transaction()
                marked, why = isolate(row, exc)
            done.extend(marked)
            isolated.append(why)
            log.error("store.row_isolated", kind=why.kind, name=why.name, reason=why.reason)
        return Processed(done, isolated)

    # -- reads -------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        return await self._read(lambda conn: self._load_job(conn, job_id))

    async def list_jobs(self, params: ListJobsParams) -> JobPage:
        columns = _JOB_COLUMNS if params.full else _BASIC_JOB_COLUMNS
        query = sa.select(*columns).order_by(jobs.c.id.desc()).limit(params.page_size)
        if params.queue:
            query = query.where(jobs.c.queue == params.queue)
        if params.state is not None:
            query = query.where(jobs.c.state == params.state)
        if params.after_job_id:
            query = query.where(jobs.c.id < params.after_job_id)
        return await self._read(lambda conn: _job_page(conn, query, params))

    async def due_times(self) -> DueTimes:
        return await self._read(_due_times)

    def _load_job(self, conn: Connection, job_id: str) -> Job:
        row = (conn.execute(sa.select(*_JOB_COLUMNS).where(jobs.c.id == job_id))).first()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        history = conn.execute(
            sa.select(job_attempts)
            .where(job_attempts.c.job_id == job_id)
            .order_by(job_attempts.c.id)
        )
        return job_from_row(row, tuple(attempt_from_row(h) for h in history))

    def _rows_by_id(
        self, conn: Connection, ids: Sequence[str], columns: list[Any]
    ) -> dict[str, sa.Row[Any]]:
        rows: dict[str, sa.Row[Any]] = {}
        for chunk in chunks(sorted(set(ids))):
            result = conn.execute(sa.select(*columns).where(jobs.c.id.in_(chunk)))
            rows.update({row.id: row for row in result})
        return rows


# -- helpers ---------------------------------------------------------------------------------


# The basic view of a listed job leaves out its largest fields.
_BASIC_JOB_COLUMNS = [
    sa.null().label(c.name) if c.name in ("payload", "result", "checkpoint") else c
    for c in _JOB_COLUMNS
]


def _job_page(conn: Connection, query: Any, params: ListJobsParams) -> JobPage:
    """The page's jobs, read row by row until the next one would pass the reply limit (the
    rows after it are never fetched)."""
    page: list[Job] = []
    total = 0
    result = conn.execute(query)
    try:
        for row in result:
            job = job_from_row(row, ())
            if params.reply_limit is not None:
                size = listed_job_size(job)
                if page and total + size > params.reply_limit.budget:
                    return JobPage(jobs=page, more=True)
                total += size
            page.append(job)
    finally:
        result.close()
    return JobPage(jobs=page, more=len(page) == params.page_size)


def _migrate(conn: Connection) -> None:
    upgrade_to_head(conn)
    conn.commit()


def _probe_write(conn: Connection) -> None:
    """Writes and deletes one page-sized row in the writer's transaction: it needs a new page
    and a WAL append, as a real write does, and leaves nothing behind. The empty queue name
    is one no caller can use."""
    key = "write-probe" + "." * (_PROBE_BYTES if conn.dialect.name == "sqlite" else 200)
    conn.execute(
        sa.insert(throttle_buckets).values(queue="", throttle_key=key, tokens=0.0, updated_at=0)
    )
    conn.execute(
        sa.delete(throttle_buckets).where(
            throttle_buckets.c.queue == "", throttle_buckets.c.throttle_key == key
        )
    )


def _repair_orphaned_queues(conn: Connection) -> None:
    with conn.begin():
        repaired = queues_sql.ensure_rows_for_jobs(conn, time.time_ns() // 1000)
    if repaired:
        log.warning("store.queue_rows_repaired", queues=repaired[:20], count=len(repaired))


def _due_times(conn: Connection) -> DueTimes:
    scheduled = conn.scalar(
        sa.select(sa.func.min(jobs.c.run_at)).where(jobs.c.state == JobState.SCHEDULED)
    )
    expiry = conn.scalar(
        sa.select(sa.func.min(jobs.c.lease_expires_at)).where(jobs.c.state == JobState.LEASED)
    )
    return DueTimes(next_scheduled_at=scheduled, next_lease_expiry_at=expiry)


def _row_fault(exc: BaseException) -> bool:
    """Whether a failure is one row's fault (isolate the row), not the database's (give up)."""
    if isinstance(exc, sa.exc.OperationalError):
        return False  # a full disk, a lock, a lost connection: every row would fail alike
    if isinstance(exc, (*_ROW_FAULT_TYPES, sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    return isinstance(exc, sa.exc.StatementError) and isinstance(exc.orig, _ROW_FAULT_TYPES)


def _reason(exc: BaseException) -> str:
    """An error for logs and job records: its type and a short prefix, never a whole value
    (nor SQLAlchemy's rendering of the statement and its parameters)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    return f"{type(exc).__name__}: {str(exc)[:_REASON_PREFIX]}"


def _settle_future(op: _WriteOp, error: BaseException | None) -> None:
    if op.future.done():
        return
    result = op.results[0] if op.results else None
    if error is not None:
        op.future.set_exception(error)
    elif isinstance(result, ConveyorError):
        op.future.set_exception(result)
    else:
        op.future.set_result(result)
