"""Hot-path statements: written with SQLAlchemy Core, compiled once per dialect, and run
through the driver's executemany. SQLAlchemy's per-row parameter processing costs more than
SQLite's own work for the small rows of a batch, so the batch paths (insert, claim,
transition, extend, history) skip it; everything else goes through Connection.execute."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable


class Prepared:
    """Constants in the statement must be `literal()` (see `constant`), so that every bound
    parameter comes from the rows."""

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any], int]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, Callable[[Mapping[str, Any]], Any], int]:
        key = f"{dialect.name}+{dialect.driver}"
        compiled = self._compiled.get(key)
        if compiled is None:
            result = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            if result.positional:
                names = tuple(result.positiontup or ())
                compiled = (result.string, operator.itemgetter(*names), len(names))
            else:
                # Named parameters (psycopg's %(name)s): the driver takes a dict per row.
                # Without this the empty positiontup made itemgetter() raise a TypeError.
                named = tuple(result.binds)
                compiled = (result.string, _pick(named), 0)
            self._compiled[key] = compiled
        return compiled

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        sql, getter, count = self._for(conn.dialect)
        if count == 1:
            conn.exec_driver_sql(sql, [(getter(row),) for row in rows])
        elif count == 0:
            conn.exec_driver_sql(sql, [getter(row) for row in rows])
        else:
            conn.exec_driver_sql(sql, [getter(row) for row in rows])


Batch = tuple[Prepared, Sequence[Mapping[str, Any]]]


def execute_together(conn: Connection, batches: Sequence[Batch]) -> None:
    """Runs each statement over its rows, in order. On PostgreSQL, in one psycopg pipeline:
    one round trip to the server for all of them instead of one per statement (a receipt's
    UPDATE and history INSERT, a claim's UPDATE and its queue's counters). Each executemany
    is one round trip already; on a loaded machine every round trip also waits for the
    server's process to be scheduled, which cost more than the statements themselves."""
    batches = [(prepared, rows) for prepared, rows in batches if rows]
    driver = conn.connection.driver_connection
    pipeline = getattr(driver, "pipeline", None)
    if conn.dialect.name != "postgresql" or len(batches) < 2 or pipeline is None:
        for prepared, rows in batches:
            prepared.executemany(conn, rows)
        return
    try:
        with pipeline(), driver.cursor() as cursor:  # type: ignore[union-attr]
            for prepared, rows in batches:
                sql, getter, _count = prepared._for(conn.dialect)
                cursor.executemany(sql, [getter(row) for row in rows])
    except Exception as exc:
        if getattr(driver, "broken", False) or getattr(driver, "closed", False):
            # As SQLAlchemy does for its own statements: the next call connects anew.
            conn.invalidate(exc)
        raise


def _pick(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def pick(row: Mapping[str, Any]) -> dict[str, Any]:
        return {name: row[name] for name in names}

    return pick


def constant(value: int) -> Any:
    """A number written into the SQL text instead of bound, for Prepared statements."""
    return sa.literal_column(str(int(value)))
