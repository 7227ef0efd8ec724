"""PostgreSQL: the rows a claim or a receipt looks up by id are found through the primary key,
even in a young jobs table that autovacuum has not analysed yet. Planned from a plain IN list
of 100 ids, such lookups scanned the whole table there, and those scans took most of each
claim's and receipt's time (issue 9). So is the one row a claim, a heartbeat or a receipt
changes: there a full scan of a partial index on state had looked as cheap. The tests read
the plan, not a clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from conveyor_server.store import dialects, jobs_sql
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


def _filled(url: str, fill: str, params: dict[str, int] | None = None) -> sa.Engine:
    """An engine on the database at `url`, migrated, then filled by one INSERT committed on
    its own (the plans are read in later transactions)."""
    engine = sa.create_engine(dialects.sync_url(url))
    with engine.begin() as conn:
        upgrade_to_head(conn)
    with engine.begin() as conn:
        conn.execute(sa.text(fill), params or {})
    return engine


def _plan(conn: Connection, query: sa.Select[object]) -> str:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
    return "\n".join(row[0] for row in rows)


def test_rows_looked_up_by_id_are_found_through_the_primary_key(
    postgres: PostgresServer,
) -> None:
    engine = _filled(postgres.clean_database(), _FILL, {"jobs": JOBS})
    try:
        with engine.begin() as conn:
            ids = [f"{n:032d}" for n in range(1, JOBS, JOBS // LOOKED_UP)]
            assert len(ids) == LOOKED_UP
            for columns, lock in ((JOB_COLUMNS, False), (HOLDER_COLUMNS, True)):
                plan = _plan(conn, rows_by_id_query(conn.dialect, ids, columns, lock=lock))
                assert "jobs_pkey" in plan, plan
                assert "Seq Scan" not in plan, plan
    finally:
        engine.dispose()


# A young table: a hundred leased jobs, never analysed. There a full scan of a partial index
# on state costs about what the primary-key probe does, and PostgreSQL took it.
_FILL_LEASED = """
INSERT INTO jobs (id, queue, task_type, payload, state, priority, run_at, delay, max_attempts,
    attempt, lease_duration, retry_initial_backoff, retry_multiplier, retry_max_backoff,
    retry_jitter, depth, cancel_requested, created_at, lease_token, lease_expires_at)
SELECT lpad(g::text, 32, '0'), 'q', 't', '\\x'::bytea, 3, 0, g, 0, 3, 1, 30000000, 1000000,
    2.0, 60000000, 0.1, 0, false, g, 'token-' || g, g
FROM generate_series(1, 100) AS g
"""

_ROW = {
    "b_id": f"{50:032d}",
    "b_token": "token-50",
    "b_expires": 1,
    "b_checkpoint": None,
    "b_worker": "w",
    "b_now": 1,
    "b_window": None,
    "b_unconfirmed": False,
    "b_state": 4,
    "b_run_at": None,
    "b_attempt_delta": 0,
    "b_result": None,
    "b_error_message": None,
    "b_error_type": None,
    "b_error_non_retryable": None,
    "b_finished_at": 1,
    "b_new_token": "token-50",
    "b_receipt_digest": None,
}


@pytest.fixture(scope="module")
def young_table(postgres: PostgresServer) -> Iterator[sa.Engine]:
    """A database of its own: the shared one's jobs table has held rows, so it is not young."""
    url = postgres.create_database()
    engine = _filled(url, _FILL_LEASED)
    try:
        yield engine
    finally:
        engine.dispose()
        postgres.drop_database(url)


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("statement", ["_CLAIM", "_EXTEND", "_APPLY_TRANSITION"])
def test_a_job_changed_by_id_is_found_through_the_primary_key_in_a_young_table(
    young_table: sa.Engine, statement: str, plan_cache_mode: str
) -> None:
    """The claim, the heartbeat and the receipt change one row each, found by id; with a
    cached generic plan (psycopg prepares a statement run five times) a bad choice made while
    the table was small stayed for good."""
    with young_table.begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
        sql, pick, _count = getattr(jobs_sql, statement)._for(conn.dialect)
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", pick(_ROW)))
        assert "jobs_pkey" in plan, plan
