"""Maintained job counts per (queue, task type, state), so that queue statistics and the
`conveyor_jobs` gauge cost the same with a million jobs waiting as with ten.

Every statement that inserts a job, changes its state or deletes it records the change here
(`added`, `moved`, `removed`); the deltas gather on the connection for the whole writer
group and are written once, aggregated, by `flush` at the end of the group's transaction
(store/sql.py, `_apply_group`): one statement per group commit, not one per job. They commit
or roll back with the jobs they describe, so the counts stay exact, also with several
coordinators on one PostgreSQL database (the upsert adds, it never overwrites).

A savepoint that rolls back (store/isolation.py) restores the deltas from before it (`mark`,
`restore`). `recount` rebuilds the table from the jobs themselves: `conveyor serve
--recount-queues` runs it at start-up, which repairs counts that a change made outside the
coordinator (a hand-written UPDATE or DELETE on jobs) left wrong. It scans every job (seconds
at a million), which is why it is not run at every start."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from conveyor_server.core.model import JobState
from conveyor_server.store.prepared import Prepared
from conveyor_server.store.schema import jobs, queue_counts

log = structlog.get_logger("conveyor.store")

# The key of the pending deltas in Connection.info (the writer's one connection).
_PENDING = "conveyor.queue_count_deltas"

Key = tuple[str, str, int]  # queue, task type, state


def _pending(conn: Connection) -> Counter[Key]:
    deltas: Counter[Key] | None = conn.info.get(_PENDING)
    if deltas is None:
        deltas = conn.info[_PENDING] = Counter()
    return deltas


def begin(conn: Connection) -> None:
    """A new transaction: whatever an earlier, failed one recorded is gone with it."""
    conn.info[_PENDING] = Counter()


def added(conn: Connection, queue: str, task_type: str, state: int, n: int = 1) -> None:
    if n:
        _pending(conn)[(queue, task_type, int(state))] += n


def removed(conn: Connection, queue: str, task_type: str, state: int, n: int = 1) -> None:
    if n:
        _pending(conn)[(queue, task_type, int(state))] -= n


def moved(
    conn: Connection, queue: str, task_type: str, before: int, after: int, n: int = 1
) -> None:
    if n and int(before) != int(after):
        deltas = _pending(conn)
        deltas[(queue, task_type, int(before))] -= n
        deltas[(queue, task_type, int(after))] += n


def removed_rows(conn: Connection, rows: Iterable[Any]) -> None:
    """Rows a DELETE ... RETURNING queue, task_type, state removed."""
    for row in rows:
        removed(conn, row.queue, row.task_type, row.state)


def mark(conn: Connection) -> Counter[Key]:
    return Counter(_pending(conn))


def restore(conn: Connection, marked: Counter[Key]) -> None:
    """A savepoint rolled back: the deltas are again what they were when it began."""
    conn.info[_PENDING] = Counter(marked)


def _upsert(module: Any) -> Prepared:
    insert = module.insert(queue_counts).values(
        queue=sa.bindparam("queue"),
        task_type=sa.bindparam("task_type"),
        state=sa.bindparam("state"),
        n=sa.bindparam("n"),
    )
    return Prepared(
        insert.on_conflict_do_update(
            index_elements=[queue_counts.c.queue, queue_counts.c.task_type, queue_counts.c.state],
            set_={"n": queue_counts.c.n + insert.excluded.n},
        )
    )


# Compiled once per dialect (store/prepared.py): a group commit touches a few keys, and
# compiling a multi-row INSERT for each one cost more than running it.
_UPSERTS = {"sqlite": _upsert(sqlite), "postgresql": _upsert(postgresql)}


def flush(conn: Connection) -> None:
    """Adds the transaction's deltas to the counts, one upsert per (queue, task type, state)
    touched, in one executemany. Keys are written in order, so that two coordinators adding
    to the same counts cannot deadlock."""
    deltas = conn.info.pop(_PENDING, None)
    if not deltas:
        return
    rows = [
        {"queue": queue, "task_type": task_type, "state": state, "n": n}
        for (queue, task_type, state), n in sorted(deltas.items())
        if n
    ]
    _UPSERTS[conn.dialect.name].executemany(conn, rows)


def by_state(conn: Connection, queue: str) -> dict[JobState, int]:
    """A queue's jobs per state (states it holds no job in are left out): one index range
    of a few rows, whatever the queue's depth."""
    result = conn.execute(
        sa.select(queue_counts.c.state, sa.func.sum(queue_counts.c.n))
        .where(queue_counts.c.queue == queue)
        .group_by(queue_counts.c.state)
    )
    return {JobState(state): int(n) for state, n in result if n}


def by_task_type(conn: Connection, queue: str, state: JobState) -> dict[str, int]:
    result = conn.execute(
        sa.select(queue_counts.c.task_type, queue_counts.c.n).where(
            queue_counts.c.queue == queue, queue_counts.c.state == int(state), queue_counts.c.n > 0
        )
    )
    return {task_type: int(n) for task_type, n in result}


def recount(conn: Connection) -> int:
    """Rebuilds the counts from the jobs (inside the caller's transaction) and returns how
    many (queue, task type, state) counts were wrong. PostgreSQL: the table is locked first
    (EXCLUSIVE: reads go on, other coordinators' flushes wait), so no transition committing
    meanwhile is counted twice or lost; its count then comes from a snapshot taken after
    the lock."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE queue_counts IN EXCLUSIVE MODE")
    actual = {
        (row.queue, row.task_type, int(row.state)): int(row.n)
        for row in conn.execute(
            sa.select(
                jobs.c.queue, jobs.c.task_type, jobs.c.state, sa.func.count().label("n")
            ).group_by(jobs.c.queue, jobs.c.task_type, jobs.c.state)
        )
    }
    kept = {
        (row.queue, row.task_type, int(row.state)): int(row.n)
        for row in conn.execute(sa.select(queue_counts))
    }
    wrong = sorted(k for k in actual.keys() | kept.keys() if actual.get(k, 0) != kept.get(k, 0))
    if not wrong:
        return 0
    conn.execute(sa.delete(queue_counts))
    if actual:
        conn.execute(
            sa.insert(queue_counts),
            [
                {"queue": q, "task_type": t, "state": s, "n": n}
                for (q, t, s), n in sorted(actual.items())
            ],
        )
    log.warning(
        "store.queue_counts_repaired", wrong=len(wrong), examples=[list(k) for k in wrong[:5]]
    )
    return len(wrong)
