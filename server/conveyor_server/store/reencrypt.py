"""`conveyor reencrypt`: rewrites every payload, result and checkpoint (and every schedule's
job template) not yet sealed under the current key (older keys, or plaintext from before
encryption), in batches of rows, each batch its own transaction. Safe beside running
coordinators: each value is replaced only where it still holds what was read (a heartbeat or
receipt that changed it meanwhile wins, and it was written under the current key by any
coordinator already configured with it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from conveyor_server.store import dialects
from conveyor_server.store.blobs import FIELDS, SCHEDULE_FIELD, BlobCodec, BlobUnreadable
from conveyor_server.store.schema import jobs, schedules

log = structlog.get_logger("conveyor.store")

DEFAULT_BATCH_ROWS = 500


@dataclass
class Reencrypted:
    rows_read: int = 0
    values_rewritten: int = 0
    # Changed by a coordinator between the read and the write; left as it was rewritten.
    values_changed_meanwhile: int = 0
    # Sealed under a key not configured here (job ids are logged).
    values_unreadable: int = 0


def reencrypt(
    url: str,
    codec: BlobCodec,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[Reencrypted], None] | None = None,
) -> Reencrypted:
    engine = sa.create_engine(dialects.sync_url(url), hide_parameters=True)
    counts = Reencrypted()
    try:
        for table, key, fields in _SEALED:
            after = ""
            while True:
                with engine.begin() as conn:
                    last = _batch(conn, codec, (table, key, fields), after, batch_rows, counts)
                if last is None:
                    break
                after = last
                if progress is not None:
                    progress(counts)
        return counts
    finally:
        engine.dispose()


# Each table with sealed values: its key column (the owner the values are bound to) and fields.
_Sealed = tuple[sa.Table, str, tuple[str, ...]]
_SEALED: tuple[_Sealed, ...] = (
    (jobs, "id", FIELDS),
    (schedules, "name", (SCHEDULE_FIELD,)),
)


def _batch(
    conn: Connection,
    codec: BlobCodec,
    sealed: _Sealed,
    after: str,
    limit: int,
    counts: Reencrypted,
) -> str | None:
    """One batch of rows after key `after`; the last key read, None when none were left."""
    table, key, fields = sealed
    rows = conn.execute(
        sa.select(table.c[key], *(table.c[f] for f in fields))
        .where(table.c[key] > after)
        .order_by(table.c[key])
        .limit(limit)
    ).all()
    for row in rows:
        owner = getattr(row, key)
        for field in fields:
            old = getattr(row, field)
            if old is None or codec.current(bytes(old)):
                continue
            try:
                value = codec.open(owner, field, bytes(old))
            except BlobUnreadable:
                counts.values_unreadable += 1
                log.error("reencrypt.unreadable", owner=owner, field=field)
                continue
            changed = conn.execute(
                sa.update(table)
                .where(table.c[key] == owner, table.c[field] == old)
                .values({field: codec.seal(owner, field, value)})
            ).rowcount
            if changed:
                counts.values_rewritten += 1
            else:
                counts.values_changed_meanwhile += 1
    counts.rows_read += len(rows)
    return getattr(rows[-1], key) if rows else None
