"""Task contracts in SQL: registrations, which worker runs which job (as a WHERE clause), and
what workers said they implement, for the queue stats. Runs inside the store's threads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from conveyor_server.core.contracts import TaskType
from conveyor_server.core.model import JobState, LeaseParams, Micros, TaskTypeRef, Version
from conveyor_server.errors import AlreadyExists, NotFound, shown
from conveyor_server.store import counts, dialects
from conveyor_server.store.namespaced import in_namespace
from conveyor_server.store.schema import jobs, task_types, worker_task_types

# Workers seen leasing within this window count as connected in the queue stats.
WORKER_SEEN_WINDOW: Micros = 60 * 1_000_000
# A worker's declaration is written at most this often (seconds) per coordinator: often
# enough to stay within the window, rare enough to cost nothing on the lease path.
_RECORD_EVERY = 10.0
ANY_TASK_TYPE = "*"
ANY_VERSION = -1


def runnable_by_type(refs: Sequence[TaskTypeRef]) -> list[sa.ColumnElement[bool]]:
    """Jobs a worker declaring `refs` may take, one clause per task type: jobs of that type;
    of a versioned job, only where the worker has the same major version at that minor.patch
    or later (or declared the type without a version)."""
    by_name: dict[str, list[Version | None]] = {}
    for ref in refs:
        by_name.setdefault(ref.name, []).append(ref.version)
    clauses: list[sa.ColumnElement[bool]] = []
    for name, versions in by_name.items():
        if None in versions:
            clauses.append(jobs.c.task_type == name)
            continue
        compatible = [_runs(v) for v in versions if v is not None]
        clauses.append(
            sa.and_(jobs.c.task_type == name, sa.or_(jobs.c.version_major.is_(None), *compatible))
        )
    return clauses


def _runs(v: Version) -> sa.ColumnElement[bool]:
    return sa.and_(
        jobs.c.version_major == v.major,
        sa.or_(
            jobs.c.version_minor < v.minor,
            sa.and_(jobs.c.version_minor == v.minor, jobs.c.version_patch <= v.patch),
        ),
    )


class WorkerDeclarations:
    """Writes what each worker implements, per queue, at most every few seconds."""

    def __init__(self) -> None:
        self._written: dict[tuple[str, tuple[str, ...], tuple[TaskTypeRef, ...]], float] = {}
        # Written in the writer's open transaction: remembered only once it commits.
        self._pending: dict[tuple[str, tuple[str, ...], tuple[TaskTypeRef, ...]], float] = {}

    def committed(self) -> None:
        if self._pending:
            self._written.update(self._pending)
            self._pending.clear()

    def rolled_back(self) -> None:
        self._pending.clear()

    def record(self, conn: Connection, params: LeaseParams) -> None:
        key = (params.worker_id, params.queues, params.task_types)
        clock = time.monotonic()
        if max(self._written.get(key, 0.0), self._pending.get(key, 0.0)) > clock:
            return
        self._pending[key] = clock + _RECORD_EVERY
        if len(self._written) > 10_000:  # workers come and go; forget the oldest half
            for stale in sorted(self._written, key=self._written.__getitem__)[:5_000]:
                del self._written[stale]
        conn.execute(
            sa.delete(worker_task_types).where(
                sa.or_(
                    worker_task_types.c.seen_at < params.now - 10 * WORKER_SEEN_WINDOW,
                    sa.and_(
                        worker_task_types.c.worker_id == params.worker_id,
                        worker_task_types.c.queue.in_(params.queues),
                    ),
                )
            )
        )
        refs = params.task_types or (TaskTypeRef(ANY_TASK_TYPE, None),)
        conn.execute(
            # An upsert: the same worker may lease through two coordinators at once.
            dialects.insert_or_update(
                conn.dialect, worker_task_types, ("minor", "patch", "seen_at")
            ),
            [
                {
                    "worker_id": params.worker_id,
                    "queue": queue,
                    "task_type": ref.name,
                    "major": ref.version.major if ref.version else ANY_VERSION,
                    "minor": ref.version.minor if ref.version else None,
                    "patch": ref.version.patch if ref.version else None,
                    "seen_at": params.now,
                }
                for queue in params.queues
                for ref in _broadest(refs)
            ],
        )


def _broadest(refs: Sequence[TaskTypeRef]) -> list[TaskTypeRef]:
    """One row per task type and major version, holding the highest minor.patch: what
    decides whether some worker may take a job."""
    best: dict[tuple[str, int], TaskTypeRef] = {}
    for ref in refs:
        key = (ref.name, ref.version.major if ref.version else ANY_VERSION)
        known = best.get(key)
        if known is None or (known.version and ref.version and ref.version > known.version):
            best[key] = ref
    return list(best.values())


def awaiting_compatible_worker(conn: Connection, queue: str, now: Micros) -> int:
    """Available jobs of the queue that no worker seen within the window may take. Decided
    per task type from the maintained counts (store/counts.py) and the few declarations of
    recent workers; only a type that workers declared with versions has its jobs read (each
    job's version decides), on that type's dispatch index."""
    w = worker_task_types
    seen = conn.execute(
        sa.select(w.c.task_type, w.c.major).where(
            w.c.queue == queue, w.c.seen_at >= now - WORKER_SEEN_WINDOW
        )
    ).all()
    if any(row.task_type == ANY_TASK_TYPE for row in seen):
        return 0
    declared: dict[str, set[int]] = {}
    for row in seen:
        declared.setdefault(row.task_type, set()).add(row.major)
    awaiting = 0
    for task_type, n in counts.by_task_type(conn, queue, JobState.AVAILABLE).items():
        majors = declared.get(task_type)
        if majors is None:
            awaiting += n  # no recent worker runs this type at all
        elif ANY_VERSION not in majors:
            awaiting += _awaiting_by_version(conn, queue, task_type, now)
    return awaiting


def _awaiting_by_version(conn: Connection, queue: str, task_type: str, now: Micros) -> int:
    """Available jobs of one type whose version no recent worker of the queue implements."""
    w, j = worker_task_types, jobs
    compatible_version = sa.or_(
        j.c.version_major.is_(None),
        sa.and_(
            w.c.major == j.c.version_major,
            sa.or_(
                w.c.minor > j.c.version_minor,
                sa.and_(w.c.minor == j.c.version_minor, w.c.patch >= j.c.version_patch),
            ),
        ),
    )
    taker = (
        sa.select(sa.literal(1))
        .select_from(w)
        .where(
            w.c.queue == j.c.queue,
            w.c.seen_at >= now - WORKER_SEEN_WINDOW,
            w.c.task_type == j.c.task_type,
            compatible_version,
        )
    )
    count = conn.scalar(
        sa.select(sa.func.count())
        .select_from(j)
        .where(
            j.c.queue == queue,
            j.c.task_type == task_type,
            j.c.state == JobState.AVAILABLE,
            ~taker.exists(),
        )
    )
    return int(count or 0)


def register(conn: Connection, task_type: TaskType) -> TaskType:
    """Stores a new version; the same registration again is harmless; a different message or
    descriptors under a published version is refused."""
    existing = find(conn, task_type.name, task_type.version)
    if existing is not None:
        if (existing.message_type, existing.descriptors) != (
            task_type.message_type,
            task_type.descriptors,
        ):
            raise AlreadyExists(
                f"task type {task_type.name} {task_type.version} is already registered with "
                f"other descriptors ({existing.message_type}); a published version never "
                "changes: register a new version instead"
            )
        return existing
    v = task_type.version
    conn.execute(
        sa.insert(task_types).values(
            name=task_type.name,
            major=v.major,
            minor=v.minor,
            patch=v.patch,
            message_type=task_type.message_type,
            descriptors=task_type.descriptors,
            registered_at=task_type.registered_at,
        )
    )
    return task_type


def load(conn: Connection, name: str, version: Version | None) -> TaskType:
    found = (
        find(conn, name, version)
        if version is not None
        else _from_row(
            conn.execute(
                sa.select(task_types)
                .where(task_types.c.name == name)
                .order_by(
                    task_types.c.major.desc(), task_types.c.minor.desc(), task_types.c.patch.desc()
                )
                .limit(1)
            ).first()
        )
    )
    if found is None:
        what = f"task type {shown(name)}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} is not registered")
    return found


def page(
    conn: Connection, after: tuple[str, Version] | None, limit: int, namespace: str | None = None
) -> list[TaskType]:
    t = task_types.c
    query = sa.select(task_types).order_by(t.name, t.major, t.minor, t.patch).limit(limit)
    if namespace is not None:
        query = query.where(in_namespace(t.name, namespace))
    if after is not None:
        name, v = after
        query = query.where(
            sa.tuple_(t.name, t.major, t.minor, t.patch)
            > sa.tuple_(
                sa.literal(name), sa.literal(v.major), sa.literal(v.minor), sa.literal(v.patch)
            )
        )
    return [tt for row in conn.execute(query) if (tt := _from_row(row)) is not None]


def registered(conn: Connection, wanted: set[tuple[str, Version]]) -> set[tuple[str, Version]]:
    """Which of these (name, version) pairs are registered: one query on the keys, without
    loading any descriptors (this runs in the enqueue transaction of strict queues)."""
    t = task_types.c
    names = sorted({name for name, _version in wanted})
    if not names:
        return set()
    rows = conn.execute(sa.select(t.name, t.major, t.minor, t.patch).where(t.name.in_(names)))
    stored = {(row.name, Version(row.major, row.minor, row.patch)) for row in rows}
    return wanted & stored


def find(conn: Connection, name: str, version: Version) -> TaskType | None:
    t = task_types.c
    row = conn.execute(
        sa.select(task_types).where(
            t.name == name,
            t.major == version.major,
            t.minor == version.minor,
            t.patch == version.patch,
        )
    ).first()
    return _from_row(row)


def _from_row(row: Any) -> TaskType | None:
    if row is None:
        return None
    return TaskType(
        name=row.name,
        version=Version(row.major, row.minor, row.patch),
        message_type=row.message_type,
        descriptors=row.descriptors,
        registered_at=row.registered_at,
    )
