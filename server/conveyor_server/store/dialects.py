"""The few places where SQLite and PostgreSQL differ, each in one small function."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url

from conveyor_server.core.model import JobState
from conveyor_server.errors import ConveyorError, InvalidArgument, ResourceExhausted, Unavailable
from conveyor_server.store.prepared import Prepared
from conveyor_server.store.schema import jobs, throttle_buckets

_SYNCHRONOUS_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}

# SQLite primary result codes (the low byte of an extended code) that mean the storage
# itself failed, not the request.
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
# PostgreSQL SQLSTATEs: disk_full, and the insufficient_resources class.
_PG_DISK_FULL, _PG_RESOURCES = "53100", "53"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sync_url(url: str) -> str:
    """The URL of the blocking driver: store operations run whole in database threads
    (store/threads.py). `sqlite+aiosqlite://` from older configurations means `sqlite://`."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite+aiosqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite")
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


def create_writer_engine(url: str, synchronous: str) -> Engine:
    # hide_parameters: an error's text never carries a bound value (a payload, say) to a log.
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, hide_parameters=True)
    if _is_sqlite(url):
        _sqlite_pragmas(engine, synchronous)

        @event.listens_for(engine, "begin")
        def on_begin(connection: Any) -> None:
            # IMMEDIATE takes the write lock at BEGIN, so a read-then-write transaction
            # (fencing check, then update) can never be overtaken by another writer.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_reader_engine(url: str, synchronous: str) -> Engine:
    engine = sa.create_engine(
        url, pool_size=4, max_overflow=4, isolation_level="AUTOCOMMIT", hide_parameters=True
    )
    if _is_sqlite(url):
        _sqlite_pragmas(engine, synchronous)
    return engine


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


def insert_ignoring_existing(dialect: Dialect, table: sa.Table) -> Any:
    """INSERT that leaves rows whose primary key exists alone."""
    return _dialect_module(dialect).insert(table).on_conflict_do_nothing()


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
    if dialect.name == "postgresql":
        # Several coordinators share the database: skip rows another one is claiming.
        query = query.with_for_update(skip_locked=True)
    return query


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
