"""Database threads: each owns one connection and runs whole functions on it.

SQLite's driver is blocking, so its calls must leave the event loop. Handing over each
statement (as aiosqlite and SQLAlchemy's asyncio layer do) costs a thread hop per statement
and per fetch — measured here at about 0.3 ms for a one-row SELECT against 2 µs in-thread —
which would put several milliseconds into every lease. Instead a store operation is a plain
function of a SQLAlchemy Connection that runs start to finish in the thread: one hop per
operation (for the writer, one per group of operations)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

T = TypeVar("T")


class DatabaseThread:
    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: Connection | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._engine.connect()  # made in, and only used by, this thread
        try:
            return work(self._conn)
        except Exception:
            if self._conn.invalidated or self._conn.closed:
                # The database dropped the connection (a restart, a terminated backend): this
                # call fails, and the next one connects anew instead of failing for ever.
                self._conn.close()
                self._conn = None
            raise

    async def close(self, *, dispose: bool = True) -> None:
        if self._conn is not None:
            await self.run(lambda conn: conn.close())
        self._executor.shutdown(wait=True)
        if dispose:
            # Closing a Connection only returns it to the engine's pool, which keeps it open
            # (on PostgreSQL, a server slot each) until the engine is disposed.
            self._engine.dispose()


class ReaderPool:
    """A few reader threads, used in turn; WAL lets them read beside the writer."""

    def __init__(self, engine: Engine, size: int) -> None:
        self._engine = engine
        self._threads = [DatabaseThread(engine, f"conveyor-reader-{i}") for i in range(size)]
        self._turn = itertools.cycle(self._threads)

    async def run(self, work: Callable[[Connection], T]) -> T:
        return await next(self._turn).run(work)

    async def close(self) -> None:
        for thread in self._threads:
            await thread.close(dispose=False)
        self._engine.dispose()
