"""The group-commit writer: one connection in its own thread takes whatever write operations
are waiting, runs them in one transaction in one thread hop, commits once and only then
answers each caller. Many producers sending one job each share one commit (one fsync on
SQLite), and no caller hears OK before its write is durable.

On PostgreSQL the writer is one of possibly many (several coordinators share the database):
its correctness never rests on being the only writer (see store/jobs_sql.py); group commit is
kept because it saves round trips and commits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from conveyor_server.core.model import NewJob
from conveyor_server.errors import ConveyorError, Unavailable
from conveyor_server.store import dialects
from conveyor_server.store.threads import DatabaseThread

log = structlog.get_logger("conveyor.store")

# How often a group aborted to break a deadlock (PostgreSQL, several coordinators) runs again.
DEADLOCK_RETRIES = 3
# While the store cannot write, how often it tries a probe write to learn it can again.
WRITE_PROBE_INTERVAL_SECONDS = 1.0


@dataclass
class WriteOp:
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


@dataclass(frozen=True)
class WriterHooks:
    """What the store plugs into the writer: how to apply a group inside its transaction,
    what to do after a commit or a rollback (caches), and how to set the sync level."""

    apply_group: Callable[[Connection, list[WriteOp]], None]
    committed: Callable[[], None]
    rolled_back: Callable[[], None]
    sync_level: Callable[[Connection, bool], None]
    probe: Callable[[Connection], None]


class GroupWriter:
    def __init__(
        self,
        thread: DatabaseThread,
        hooks: WriterHooks,
        *,
        max_batch: int,
        on_write_health: Callable[[bool], None] | None = None,
    ) -> None:
        """`on_write_health(False)` is called (on the event loop) when a write fails because
        the storage did (a full disk, an I/O error), and `on_write_health(True)` once a probe
        write succeeds again."""
        self.thread = thread
        self._hooks = hooks
        self._max_batch = max_batch
        self._on_write_health = on_write_health
        self._writable = True
        self._storage_failed = False  # set in the writer thread, read after its hop returns
        self._probe_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[WriteOp | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="conveyor-store-writer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._task is not None:
            await self._queue.put(None)
            await self._task
        await self.thread.close()

    async def submit(self, op: WriteOp) -> Any:
        if self._closed:
            raise Unavailable("the coordinator is shutting down")
        await self._queue.put(op)
        return await op.future

    async def write(
        self, run: Callable[[Connection], Any], weight: int = 1, *, must_sync: bool = True
    ) -> Any:
        loop = asyncio.get_running_loop()
        op = WriteOp(run=run, future=loop.create_future(), weight=weight, must_sync=must_sync)
        return await self.submit(op)

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            weight = first.weight
            stop = False
            while weight < self._max_batch and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                    break
                group.append(op)
                weight += op.weight
            try:
                errors = await self.thread.run(functools.partial(self._commit_group, group=group))
            except Exception as exc:  # the thread itself failed; tell everyone
                errors = [exc] * len(group)
            for op, error in zip(group, errors, strict=True):
                _settle_future(op, error)
            if self._storage_failed:
                self._storage_failed = False
                self._write_health(False)
            if stop:
                return

    def _commit_group(
        self, conn: Connection, group: list[WriteOp], retries: int = DEADLOCK_RETRIES
    ) -> list[BaseException | None]:
        """Runs in the writer thread; returns each operation's failure, if any."""
        self._hooks.sync_level(conn, any(op.must_sync for op in group))
        try:
            with conn.begin():
                self._hooks.apply_group(conn, group)
        except Exception as exc:
            self._hooks.rolled_back()
            if retries > 0 and dialects.worth_retrying(exc):
                log.info("store.write_retried", reason=type(exc).__name__)
                for op in group:
                    op.results.clear()
                return self._commit_group(conn, group, retries - 1)
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
        self._hooks.committed()
        return [None] * len(group)

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
                    await self.write(self._hooks.probe)
                except Exception:  # nosec B112 # the probe retries; the failure was logged
                    continue  # still failing; the failure was logged
                self._probe_task = None
                self._write_health(True)
                return
        finally:
            self._probe_task = None


def _settle_future(op: WriteOp, error: BaseException | None) -> None:
    if op.future.done():
        return
    result = op.results[0] if op.results else None
    if error is not None:
        op.future.set_exception(error)
    elif isinstance(result, ConveyorError):
        op.future.set_exception(result)
    else:
        op.future.set_result(result)
