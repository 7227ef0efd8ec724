"""The few places where SQLite and PostgreSQL differ, each in one small function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url

from conveyor_server.core.model import JobState
from conveyor_server.errors import ConveyorError, InvalidArgument, ResourceExhausted, Unavailable
from conveyor_server.store.prepared import Prepared
from conveyor_server.store.schema import jobs, throttle_buckets

_SYNCHRONOUS_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}

# PostgreSQL reader connections per coordinator (the writer has one more of its own): reads
# are short, so a few serve hundreds of long-polls; N coordinators hold N x (size + 1).
DEFAULT_POOL_SIZE = 4
# A statement running longer than this is cancelled by the server: a stuck lock or a runaway
# scan fails one request instead of wedging the writer. Generous next to a normal statement
# (well under 10 ms), short next to a client's deadline.
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000

# SQLite primary result codes (the low byte of an extended code) that mean the storage
# itself failed, not the request.
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
# PostgreSQL SQLSTATEs: disk_full, and the insufficient_resources class.
_PG_DISK_FULL, _PG_RESOURCES = "53100", "53"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def sync_url(url: str) -> str:
    """The URL of the blocking driver: store operations run whole in database threads
    (store/threads.py). `sqlite+aiosqlite://` from older configurations means `sqlite://`;
    every PostgreSQL URL (`postgresql://`, `postgres://`, `+asyncpg`) means psycopg 3,
    which blocks, as the thread design wants (asyncpg is asyncio-only)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("sqlite+aiosqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite")
    elif parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    level = synchronous.upper()
    if level not in _SYNCHRONOUS_LEVELS:
        raise InvalidArgument(f"sqlite synchronous must be one of {sorted(_SYNCHRONOUS_LEVELS)}")

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are begun by hand (see below), so the driver must not begin its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


def lock_path(url: str) -> Path | None:
    """The lock file beside a file-backed SQLite database (conveyor.db.lock beside
    conveyor.db); None for an in-memory database and for PostgreSQL, where several
    coordinators may share one database."""
    parsed = make_url(url)
    database = parsed.database or ""
    if not _is_sqlite(url) or database in ("", ":memory:") or "mode=memory" in str(parsed):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).absolute().with_name(Path(database).name + ".lock")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """PostgreSQL connection settings (SQLite ignores them): how many reader connections
    this coordinator holds beside its one writer, and how long one statement may run
    before the server cancels it (0: no limit)."""

    size: int = DEFAULT_POOL_SIZE
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS


def reader_threads(url: str, pool: PoolSettings) -> int:
    """SQLite: two readers are plenty beside WAL's one writer (measured: more add nothing
    on two cores). PostgreSQL: one per pooled connection, each thread keeping its own."""
    return 2 if _is_sqlite(url) else max(1, pool.size)


def _pg_connect_args(pool: PoolSettings) -> dict[str, Any]:
    # Set per connection at connect time (a startup parameter), not per transaction: the
    # one setting holds for every statement, behind PgBouncer too (it forwards `options`
    # only in session mode; in transaction mode set it on the role instead, see docs).
    return {"options": f"-c statement_timeout={int(pool.statement_timeout_ms)}"}


def create_writer_engine(url: str, synchronous: str, pool: PoolSettings | None = None) -> Engine:
    # hide_parameters: an error's text never carries a bound value (a payload, say) to a log.
    if not _is_sqlite(url):
        return sa.create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args=_pg_connect_args(pool or PoolSettings()),
        )
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, hide_parameters=True)
    _sqlite_pragmas(engine, synchronous)

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock at BEGIN, so a read-then-write transaction
        # (fencing check, then update) can never be overtaken by another writer.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_reader_engine(url: str, synchronous: str, pool: PoolSettings | None = None) -> Engine:
    if not _is_sqlite(url):
        size = max(1, (pool or PoolSettings()).size)
        return sa.create_engine(
            url,
            pool_size=size,
            max_overflow=0,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args=_pg_connect_args(pool or PoolSettings()),
        )
    engine = sa.create_engine(
        url, pool_size=4, max_overflow=4, isolation_level="AUTOCOMMIT", hide_parameters=True
    )
    _sqlite_pragmas(engine, synchronous)
    return engine


S = TypeVar("S", bound=sa.Select[Any])


def lock_rows(dialect: Dialect, query: S, *, skip_locked: bool = False) -> S:
    """PostgreSQL: FOR UPDATE, so that a decision read inside a write transaction still holds
    when the write runs, whatever another coordinator does meanwhile; `skip_locked` for work
    any coordinator may take (claims, rescue, promotion), where waiting would serialise
    them. SQLite: unchanged, since BEGIN IMMEDIATE already admits one writer at a time."""
    if dialect.name != "postgresql":
        return query
    return query.with_for_update(skip_locked=skip_locked)


def one_of(
    dialect: Dialect, column: sa.ColumnElement[str], values: Sequence[str]
) -> sa.ColumnElement[bool]:
    """`column IN values`, for looking rows up by key. PostgreSQL: as `= ANY(ARRAY(SELECT
    unnest(:values)))`, which hides the list's length from the planner: it then always
    seeks the key's index. Given a plain IN list of 100 ids, it scanned the whole jobs table
    while the table was small or not yet analysed (a fresh database, the first minute), and
    those scans took most of a claim's and a receipt's time (measured: 46 ms of 50 per
    read at 10,000 jobs)."""
    if dialect.name != "postgresql":
        return column.in_(values)
    array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
    keys = sa.func.array(sa.select(sa.func.unnest(array)).scalar_subquery())
    return column == sa.func.any(keys)


def _insert_ignoring_duplicate_keys(module: Any) -> Prepared:
    return Prepared(
        module.insert(jobs)
        .values({c.name: sa.bindparam(c.name) for c in jobs.c})
        .on_conflict_do_nothing(
            index_elements=[jobs.c.queue, jobs.c.idempotency_key],
            index_where=jobs.c.idempotency_key.is_not(None),
        )
    )


def _dialect_module(dialect: Dialect) -> Any:
    return postgresql if dialect.name == "postgresql" else sqlite


def insert_for(dialect: Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (both SQLite and PostgreSQL)."""
    return _dialect_module(dialect).insert(table)


def insert_ignoring_existing(dialect: Dialect, table: sa.Table) -> Any:
    """INSERT that leaves rows whose primary key exists alone."""
    return _dialect_module(dialect).insert(table).on_conflict_do_nothing()


def insert_or_update(dialect: Dialect, table: sa.Table, update: Sequence[str]) -> Any:
    """INSERT that updates the `update` columns of a row whose primary key exists. Two
    coordinators writing one key at once then both succeed (the second waits, then updates)
    where a plain INSERT after a DELETE would fail the second on the key."""
    insert = _dialect_module(dialect).insert(table)
    return insert.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={name: insert.excluded[name] for name in update},
    )


def _upsert_buckets(module: Any) -> Prepared:
    insert = module.insert(throttle_buckets).values(
        {c.name: sa.bindparam(c.name) for c in throttle_buckets.c}
    )
    return Prepared(
        insert.on_conflict_do_update(
            index_elements=[throttle_buckets.c.queue, throttle_buckets.c.throttle_key],
            set_={"tokens": insert.excluded.tokens, "updated_at": insert.excluded.updated_at},
        )
    )


_UPSERT_BUCKETS = {"sqlite": _upsert_buckets(sqlite), "postgresql": _upsert_buckets(postgresql)}


def upsert_buckets(dialect: Dialect) -> Prepared:
    return _UPSERT_BUCKETS[dialect.name]


_INSERTS = {
    "sqlite": _insert_ignoring_duplicate_keys(sqlite),
    "postgresql": _insert_ignoring_duplicate_keys(postgresql),
}


def insert_ignoring_duplicate_keys(dialect: Dialect) -> Prepared:
    """INSERT that skips rows whose (queue, idempotency_key) is taken; the caller then reads
    the key's holder to tell a duplicate from a conflict. The unique index decides, so this
    holds under any concurrency."""
    return _INSERTS[dialect.name]


def dispatch_candidates(
    dialect: Dialect,
    queue: str,
    limit: int,
    skip_keys: Sequence[str] = (),
    runnable: sa.ColumnElement[bool] | None = None,
) -> sa.Select[Any]:
    """The next due jobs of one queue in dispatch order. One query per queue keeps each on
    the ix_jobs_dispatch index instead of sorting every available job of all queues."""
    query = (
        sa.select(jobs.c.id, jobs.c.priority, jobs.c.run_at, jobs.c.throttle_key)
        .where(jobs.c.state == JobState.AVAILABLE, jobs.c.queue == queue)
        .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
        .limit(limit)
    )
    if runnable is not None:
        query = query.where(runnable)
    if skip_keys:
        query = query.where(
            sa.or_(jobs.c.throttle_key.is_(None), jobs.c.throttle_key.not_in(skip_keys))
        )
    # Several coordinators share a PostgreSQL database: skip rows another one is claiming.
    return lock_rows(dialect, query, skip_locked=True)


# PostgreSQL SQLSTATEs of a transaction the server aborted to let another one through.
_PG_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure


def worth_retrying(exc: BaseException) -> bool:
    """Whether a failed transaction may simply run again: PostgreSQL broke a deadlock
    between coordinators by aborting this one (the other went through), nothing of it
    stays. With group commit, lock order across the operations of two groups cannot be
    fixed in advance (a claim takes a worker's row, then its queue's row), so this is how
    such a cycle ends."""
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlstate", "") or "") in _PG_RETRYABLE


def storage_fault(exc: BaseException) -> ConveyorError | None:
    """The typed error for a write that failed because the storage did (a full disk, an I/O
    error), or None when the failure is something else. A full disk is RESOURCE_EXHAUSTED:
    nothing was stored and the same request succeeds once there is room."""
    # SQLite may roll the whole transaction back on a full disk, so undoing a savepoint then
    # fails too: the storage's error is then the context of the one raised.
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        fault = _storage_fault(seen)
        if fault is not None:
            return fault
        seen = seen.__cause__ or seen.__context__
    return None


def _storage_fault(exc: BaseException) -> ConveyorError | None:
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    text = str(orig).lower()
    if (
        (code is not None and code & 0xFF == _SQLITE_FULL)
        or state == _PG_DISK_FULL
        or "database or disk is full" in text
    ):
        return ResourceExhausted(
            "the coordinator's database is out of disk space; nothing was stored: retry once "
            "space is freed"
        )
    if (
        (code is not None and code & 0xFF in (_SQLITE_IOERR, _SQLITE_CANTOPEN))
        or state.startswith(_PG_RESOURCES)
        or "disk i/o error" in text
    ):
        return Unavailable(
            "the coordinator cannot write its database (I/O error); nothing was stored: retry"
        )
    return None
