"""What GetQueue and ListQueues cost as a queue grows (issue 11, item 1): with 1,000 and with
1,000,000 jobs waiting, both should cost about the same, since queue statistics come from
maintained counts (store/counts.py) and index seeks, not from counting rows.

    python bench/queue_stats.py                      # SQLite, 1,000 and 1,000,000 jobs
    python bench/queue_stats.py --db postgresql --depth 1000 --depth 100000

For each depth: a coordinator (`conveyor serve`, its own process) creates the database and
one real job; it stops; the other jobs are copied from that row with one INSERT ... SELECT
(an enqueue per job would take hours at a million); the coordinator starts again with
--recount-queues, which rebuilds the counts from the jobs the INSERT added behind its back
(how long that start takes is printed too, as start_s), and GetQueue
and ListQueues are each called --samples times, one at a time, through gRPC. As a reference,
the query the statistics used before (a COUNT(*) of the queue's jobs per state) is timed
directly on the database. The waiting jobs use three priorities, so that the oldest-age skip
scan seeks more than once. On PostgreSQL the filled table is vacuumed and analysed before the
coordinator starts again (as autovacuum would soon do). Figures are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from servers import Coordinator

from bench import _pg_admin

QUEUE = "stats"
# Every column of a job row is copied from the template but these.
_VARIED = ("id", "priority", "run_at", "created_at")
# A start with --recount-queues counts every job, slow at a million: wait longer for it.
_START_S = 300.0
_STOP_S = 60.0


def _fill(db: str, depth: int) -> None:
    """Copies the one stored job into depth - 1 more, AVAILABLE, in one statement."""
    engine = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        columns = [
            row[0] for row in conn.execute(sa.text("SELECT * FROM jobs LIMIT 0")).cursor.description
        ]
        copied = ", ".join(c for c in columns if c not in _VARIED)
        if engine.dialect.name == "sqlite":
            numbers = (
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :count) "
            )
            source = "n, jobs"
            new_id = "printf('z%031d', x)"
        else:
            numbers = ""
            source = "generate_series(1, :count) AS n(x), jobs"
            new_id = "'z' || lpad(x::text, 31, '0')"
        conn.execute(
            sa.text(
                f"{numbers}INSERT INTO jobs (id, priority, run_at, created_at, {copied}) "
                f"SELECT {new_id}, x % 3, run_at + x, created_at + x, {copied} FROM {source}"
            ),
            {"count": depth - 1},
        )
    if engine.dialect.name == "postgresql":
        # Measured in the steady state: otherwise autovacuum works through the fresh million
        # rows during the measurement, on the same two cores.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE jobs"))
    engine.dispose()


def _old_count_ms(db: str, samples: int) -> float:
    """The statement GetQueue ran before the counts: a COUNT(*) per state of the queue."""
    engine = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    statement = sa.text("SELECT state, COUNT(*) FROM jobs WHERE queue = :q GROUP BY state")
    times = []
    with engine.connect() as conn:
        for _ in range(samples):
            start = time.perf_counter()
            conn.execute(statement, {"q": QUEUE}).all()
            times.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    return statistics.median(times)


async def _timed(call: object, samples: int) -> float:
    times = []
    for _ in range(samples + 3):  # the first three warm caches and are left out
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[3:])


async def _measure(address: str, depth: int, samples: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        queue = await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))
        assert queue.stats.available == depth, (queue.stats.available, depth)
        return {
            "get_queue_ms": await _timed(
                lambda: stub.GetQueue(pb.GetQueueRequest(name=QUEUE)), samples
            ),
            "list_queues_ms": await _timed(
                lambda: stub.ListQueues(pb.ListQueuesRequest(page_size=100)), samples
            ),
        }


async def _seed(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="noop")))


async def run(db: str, depth: int, samples: int) -> dict[str, float]:
    first = Coordinator(db)
    try:
        await first.wait_ready(_START_S)
        await _seed(first.address)
    finally:
        first.stop(_STOP_S)
    start = time.perf_counter()
    _fill(db, depth)
    filled = time.perf_counter() - start
    start = time.perf_counter()
    second = Coordinator(db, "--recount-queues")
    try:
        await second.wait_ready(_START_S)
        started = time.perf_counter() - start
        figures = await _measure(second.address, depth, samples)
    finally:
        second.stop(_STOP_S)
    figures["old_count_ms"] = _old_count_ms(db, max(3, samples // 10))
    figures["fill_s"] = filled
    figures["start_s"] = started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depth", type=int, action="append")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to create the bench databases from (--db postgresql)",
    )
    args = parser.parse_args()
    depths = args.depth or [1_000, 1_000_000]
    print(f"# {os.cpu_count()} cores, {args.db}, medians of {args.samples} calls (ms)")
    for depth in depths:
        with tempfile.TemporaryDirectory(prefix="conveyor-stats-") as directory:
            if args.db == "postgresql":
                name = f"conveyor_stats_{os.getpid()}_{depth}"
                _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                _pg_admin(args.pg_url, f'CREATE DATABASE "{name}"')
                db = args.pg_url.rsplit("/", 1)[0] + "/" + name
            else:
                db = f"sqlite:///{Path(directory) / 'stats.db'}"
            try:
                figures = asyncio.run(run(db, depth, args.samples))
            finally:
                if args.db == "postgresql":
                    _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shown = "   ".join(f"{key} {value:.2f}" for key, value in figures.items())
        print(f"{depth:>9,} waiting   {shown}", flush=True)


if __name__ == "__main__":
    main()
