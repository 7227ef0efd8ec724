"""Background batches that survive one bad row: the batch runs in a savepoint; when one row's
values break it, each row runs alone and a row that fails alone is set aside (marked, logged,
counted) so that the others go on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from conveyor_server.core.ports import Isolated, Processed
from conveyor_server.store import counts

log = structlog.get_logger("conveyor.store")

T = TypeVar("T")
R = TypeVar("R")

# Called when a rollback undid what caches learned in the transaction.
Forget = Callable[[], None]

# Errors that come from one row's values, not from the database: arithmetic on an absurd
# setting, a value that no column can hold.
_ROW_FAULT_TYPES = (ArithmeticError, ValueError, TypeError, LookupError)
_REASON_PREFIX = 200


def isolating(
    conn: Connection,
    rows: Sequence[R],
    run: Callable[[Sequence[R]], list[T]],
    isolate: Callable[[R, Exception], tuple[list[T], Isolated]],
    forget: Forget,
    before_retry: Callable[[], None] | None = None,
) -> Processed[list[T]]:
    """Runs a background batch in a savepoint. If one row's values break it (arithmetic
    that overflows, a value no column holds), the batch is undone and each row runs in a
    savepoint of its own; a row that fails alone is handed to `isolate`, which marks it
    so that it is not met again, and the others go on. Database faults (a full disk, a
    lost connection) are not a row's fault: they fail the whole batch as before."""
    counted = counts.mark(conn)
    try:
        with conn.begin_nested():
            return Processed(run(rows), [])
    except Exception as exc:
        if not row_fault(exc):
            raise
        forget()  # the savepoint's rollback undid what caches learned
        counts.restore(conn, counted)
    if before_retry is not None:
        before_retry()
    done: list[T] = []
    isolated: list[Isolated] = []
    for row in rows:
        before = counts.mark(conn)
        try:
            with conn.begin_nested():
                done.extend(run([row]))
            continue
        except Exception as exc:
            if not row_fault(exc):
                raise
            forget()
            counts.restore(conn, before)
            marked, why = isolate(row, exc)
        done.extend(marked)
        isolated.append(why)
        log.error("store.row_isolated", kind=why.kind, name=why.name, reason=why.reason)
    return Processed(done, isolated)


def row_fault(exc: BaseException) -> bool:
    """Whether a failure is one row's fault (isolate the row), not the database's (give up)."""
    if isinstance(exc, sa.exc.OperationalError):
        return False  # a full disk, a lock, a lost connection: every row would fail alike
    if isinstance(exc, (*_ROW_FAULT_TYPES, sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    return isinstance(exc, sa.exc.StatementError) and isinstance(exc.orig, _ROW_FAULT_TYPES)


def reason_of(exc: BaseException) -> str:
    """An error for logs and job records: its type and a short prefix, never a whole value
    (nor SQLAlchemy's rendering of the statement and its parameters)."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    return f"{type(exc).__name__}: {str(exc)[:_REASON_PREFIX]}"
