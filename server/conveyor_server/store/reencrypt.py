"""`conveyor reencrypt`: rewrites every payload, result and checkpoint not yet sealed under the
current key (older keys, or plaintext from before encryption), in batches of rows, each batch
its own transaction. Safe beside running coordinators: each value is replaced only where it
still holds what was read (a heartbeat or receipt that changed it meanwhile wins, and it was
written under the current key by any coordinator already configured with it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from conveyor_server.store import dialects
from conveyor_server.store.blobs import FIELDS, BlobCodec, BlobUnreadable
from conveyor_server.store.schema import jobs

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
    after = ""
    try:
        while True:
            with engine.begin() as conn:
                last = _batch(conn, codec, after, batch_rows, counts)
            if last is None:
                return counts
            after = last
            if progress is not None:
                progress(counts)
    finally:
        engine.dispose()


def _batch(
    conn: Connection, codec: BlobCodec, after: str, limit: int, counts: Reencrypted
) -> str | None:
    """One batch of rows after job id `after`; the last id read, None when none were left."""
    rows = conn.execute(
        sa.select(jobs.c.id, *(jobs.c[f] for f in FIELDS))
        .where(jobs.c.id > after)
        .order_by(jobs.c.id)
        .limit(limit)
    ).all()
    for row in rows:
        for field in FIELDS:
            old = getattr(row, field)
            if old is None or codec.current(bytes(old)):
                continue
            try:
                value = codec.open(row.id, field, bytes(old))
            except BlobUnreadable:
                counts.values_unreadable += 1
                log.error("reencrypt.unreadable", job_id=row.id, field=field)
                continue
            changed = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == row.id, jobs.c[field] == old)
                .values({field: codec.seal(row.id, field, value)})
            ).rowcount
            if changed:
                counts.values_rewritten += 1
            else:
                counts.values_changed_meanwhile += 1
    counts.rows_read += len(rows)
    return rows[-1].id if rows else None
