"""PostgreSQL: the rows a claim or a receipt looks up by id are found through the primary key,
even in a young jobs table that autovacuum has not analysed yet. Planned from a plain IN list
of 100 ids, such lookups scanned the whole table there, and those scans took most of each
claim's and receipt's time (issue 9). The test reads the plan, not a clock."""

from __future__ import annotations

import sqlalchemy as sa
from conveyor_server.store import dialects
from conveyor_server.store.jobs_sql import HOLDER_COLUMNS, JOB_COLUMNS, rows_by_id_query
from conveyor_server.store.migrate import upgrade_to_head
from databases import PostgresServer
from sqlalchemy.engine import Connection

JOBS = 10_000
LOOKED_UP = 100

_FILL = """
INSERT INTO jobs (id, queue, task_type, payload, state, priority, run_at, delay, max_attempts,
    attempt, lease_duration, retry_initial_backoff, retry_multiplier, retry_max_backoff,
    retry_jitter, depth, cancel_requested, created_at)
SELECT lpad(g::text, 32, '0'), 'q', 't', '\\x'::bytea, 2, 0, g, 0, 3, 0, 30000000, 1000000,
    2.0, 60000000, 0.1, 0, false, g
FROM generate_series(1, :jobs) AS g
"""


def _plan(conn: Connection, query: sa.Select[object]) -> str:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
    return "\n".join(row[0] for row in rows)


def test_rows_looked_up_by_id_are_found_through_the_primary_key(
    postgres: PostgresServer,
) -> None:
    url = postgres.clean_database()
    engine = sa.create_engine(dialects.sync_url(url))
    try:
        with engine.begin() as conn:
            upgrade_to_head(conn)
        with engine.begin() as conn:
            conn.execute(sa.text(_FILL), {"jobs": JOBS})
            ids = [f"{n:032d}" for n in range(1, JOBS, JOBS // LOOKED_UP)]
            assert len(ids) == LOOKED_UP
            for columns, lock in ((JOB_COLUMNS, False), (HOLDER_COLUMNS, True)):
                plan = _plan(conn, rows_by_id_query(conn.dialect, ids, columns, lock=lock))
                assert "jobs_pkey" in plan, plan
                assert "Seq Scan" not in plan, plan
    finally:
        engine.dispose()
