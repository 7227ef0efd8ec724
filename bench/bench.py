"""Conveyor benchmark: enqueue throughput, end-to-end throughput, start latency, the
accuracy and cost of throttling, and what idle long-polls cost an enqueue.

    python bench/bench.py                 # everything, median of 3 runs
    python bench/bench.py --runs 5 --only e2e
    python bench/bench.py --only throttle --only e2e-throttled

e2e-throttled is e2e with a queue rate limit and 100 per-key buckets, all set too high to
hold anything back: what checking the buckets costs. throttle runs jobs through a bucket of
rate 100/s, burst 20, in real time, and reports the most jobs started in any one-second window
(the limit allows 120) and the sustained rate after the burst (should be 100/s).
e2e-2coord (PostgreSQL only) is e2e with two coordinators on one database, the batches sent to
each in turn and one worker on each (each stops at half the jobs; the other takes the rest).
lease-depth times one-job Leases (no wait; each job then acknowledged, untimed) with 1,000
jobs waiting, then with --depth (1,000,000); the deep queue is filled inside the database by
one INSERT ... SELECT copying a seed job, then ANALYZEd as autovacuum would have.
idle-polls times single Enqueue calls (one at a time) into a queue with no long-poll waiting
on it, then with 1,000 idle long-polls waiting on it (each job is leased by one of them,
which acknowledges it and long-polls again): the second p50 should stay within 2x the first.

Each run starts a fresh coordinator (`conveyor serve`, SQLite, synchronous=FULL unless
--synchronous says otherwise) in its own process, on a fresh database file; with
--db postgresql, on a fresh database on the local PostgreSQL server (--pg-url, dropped
after). Producers run in this process; workers run in their own processes
(bench/noop_worker.py) with the Python SDK.
Figures are medians over the runs; the spread (min-max) is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from servers import Coordinator, free_port

HERE = Path(__file__).resolve().parent
QUEUE = "bench"


class Server(Coordinator):
    """A coordinator in its own process, on a fresh SQLite file or PostgreSQL database."""

    def __init__(
        self,
        synchronous: str,
        log_level: str,
        pg_url: str | None = None,
        shared_with: Server | None = None,
    ) -> None:
        """`shared_with`: a second coordinator on that one's PostgreSQL database, which the
        first one drops when it stops."""
        self.dir = tempfile.mkdtemp(prefix="conveyor-bench-")
        self.pg_url = pg_url
        self.db = f"sqlite:///{self.dir}/bench.db"
        self.owns_database = shared_with is None
        if shared_with is not None:
            self.pg_url, self.pg_database = shared_with.pg_url, shared_with.pg_database
            self.db = shared_with.db
        elif pg_url is not None:
            self.pg_database = f"conveyor_bench_{os.getpid()}_{free_port()}"
            _pg_admin(pg_url, f'CREATE DATABASE "{self.pg_database}"')
            self.db = pg_url.rsplit("/", 1)[0] + "/" + self.pg_database
        super().__init__(self.db, "--sqlite-synchronous", synchronous, log_level=log_level)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)
        if self.pg_url is not None and self.owns_database:
            _pg_admin(self.pg_url, f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')


def _pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(statement.encode())


def _spec(payload: bytes = b"") -> pb.JobSpec:
    return pb.JobSpec(queue=QUEUE, task_type="noop", payload=payload)


async def enqueue_single(address: str, total: int, clients: int = 16) -> dict[str, float]:
    """Single Enqueue calls from 16 concurrent clients, each with its own channel."""
    per_client = total // clients

    async def client() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            request = pb.EnqueueRequest(job=_spec())
            for _ in range(per_client):
                await stub.Enqueue(request)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {"jobs_per_s": per_client * clients / elapsed}


async def enqueue_batch(
    address: str, total: int, batch: int = 100, senders: int = 2
) -> dict[str, float]:
    """EnqueueBatch calls of 100 jobs, from two concurrent senders."""
    request = pb.EnqueueBatchRequest(jobs=[_spec() for _ in range(batch)])
    calls = total // batch

    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        counter = iter(range(calls))

        async def sender() -> None:
            for _ in counter:
                await stub.EnqueueBatch(request)

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(senders)))
        elapsed = time.perf_counter() - start
    return {"jobs_per_s": calls * batch / elapsed}


def _start_worker(address: str, mode: str, count: int, concurrency: int) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "noop_worker.py"), address, mode, str(count), str(concurrency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"worker did not start: {line!r}")
    return worker


def _worker_report(worker: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = worker.communicate(timeout=300)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


async def _limit_queue(address: str, queue: pb.Queue, paths: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await rpc.CoordinatorServiceStub(channel).UpdateQueue(
            pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=paths))
        )


async def end_to_end(
    address: str, total: int, concurrency: int = 200, throttled: bool = False
) -> dict[str, float]:
    """Enqueue (batches of 100) -> Python SDK worker in another process -> receipt, until the
    worker has reported every job and its receipts are committed."""
    specs = [_spec() for _ in range(100)]
    if throttled:
        never_binding = pb.RateLimit(rate=1e6, burst=1_000_000)
        await _limit_queue(
            address,
            pb.Queue(name=QUEUE, rate_limit=never_binding, per_key_rate_limit=never_binding),
            ["rate_limit", "per_key_rate_limit"],
        )
        for i, spec in enumerate(specs):
            spec.throttle_key = f"customer-{i}"
    worker = _start_worker(address, "count", total, concurrency)
    request = pb.EnqueueBatchRequest(jobs=specs)
    start = time.time()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        for _ in range(total // 100):
            await stub.EnqueueBatch(request)
        report = await asyncio.to_thread(_worker_report, worker)
        elapsed = report["finished_at"] - start
        succeeded = await _count_succeeded(stub)
    if succeeded < total:
        raise RuntimeError(f"only {succeeded} of {total} jobs SUCCEEDED")
    return {"jobs_per_s": total / elapsed}


async def _count_succeeded(stub: rpc.CoordinatorServiceStub) -> int:
    count, token = 0, ""
    while True:
        page = await stub.ListJobs(
            pb.ListJobsRequest(
                queue=QUEUE, state=pb.JOB_STATE_SUCCEEDED, page_size=1000, page_token=token
            )
        )
        count += len(page.jobs)
        token = page.next_page_token
        if not token:
            return count


async def start_latency(address: str, samples: int) -> dict[str, float]:
    """One job at a time to an idle, long-polling worker: time from sending Enqueue to the
    handler starting (the payload carries the send time; one machine, one clock)."""
    worker = _start_worker(address, "latency", samples, 1)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        for _ in range(samples):
            sent = time.time()
            reply = await stub.Enqueue(pb.EnqueueRequest(job=_spec(repr(sent).encode())))
            await stub.WaitJob(pb.WaitJobRequest(job_id=reply.job_id))
            await asyncio.sleep(0.01)  # let the worker go idle and long-poll again
    report = await asyncio.to_thread(_worker_report, worker)
    latencies = sorted(report["latencies_ms"])
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def throttle_accuracy(address: str, seconds: int = 10) -> dict[str, float]:
    """A bucket of rate 100/s and burst 20, with far more jobs waiting than it lets through and
    a worker with 200 free slots: when do the jobs start?"""
    rate, burst = 100, 20
    await _limit_queue(
        address,
        pb.Queue(name=QUEUE, rate_limit=pb.RateLimit(rate=rate, burst=burst)),
        ["rate_limit"],
    )
    total = rate * seconds + burst
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        for _ in range(total // 100 + 1):
            await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[_spec() for _ in range(100)]))
    worker = _start_worker(address, "times", total, 200)
    starts = sorted((await asyncio.to_thread(_worker_report, worker))["started_at"])
    most_in_a_second = max(
        sum(1 for t in starts[i:] if t < first + 1.0) for i, first in enumerate(starts)
    )
    # After the burst, jobs should start at the bucket's rate.
    sustained = (len(starts) - burst) / (starts[-1] - starts[0])
    return {"max_per_1s_window": most_in_a_second, "sustained_per_s": sustained}


async def _timed_enqueues(stub: rpc.CoordinatorServiceStub, samples: int) -> list[float]:
    latencies = []
    for _ in range(samples):
        start = time.perf_counter()
        await stub.Enqueue(pb.EnqueueRequest(job=_spec()))
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.01)  # the long-poll that took the job acknowledges it and waits again
    return latencies


async def _idle_long_poll(
    stub: rpc.CoordinatorServiceStub, worker: str, stop: asyncio.Event
) -> None:
    """Long-polls the bench queue until `stop`; acknowledges whatever it gets."""
    wait = Duration(seconds=30)
    while not stop.is_set():
        reply = await stub.Lease(
            pb.LeaseRequest(worker_id=worker, queues=[QUEUE], max_jobs=1, wait=wait)
        )
        for job in reply.jobs:
            await stub.Receipt(
                pb.ReceiptRequest(
                    job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
                )
            )


async def idle_long_polls(address: str, polls: int = 1_000, samples: int = 200) -> dict[str, float]:
    """Enqueue latency into a queue without, then with, `polls` idle long-polls on it."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        alone = await _timed_enqueues(stub, samples)
        # Ten connections of 100 long-polls each, as many workers would hold them.
        channels = [grpc.aio.insecure_channel(address) for _ in range(10)]
        stop = asyncio.Event()
        pollers = [
            asyncio.ensure_future(
                _idle_long_poll(rpc.CoordinatorServiceStub(channels[i % 10]), f"idle-{i}", stop)
            )
            for i in range(polls)
        ]
        await asyncio.sleep(3.0)  # every long-poll has made its first (empty) claim
        crowded = await _timed_enqueues(stub, samples)
        stop.set()
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        for ch in channels:
            await ch.close()
    return {
        "p50_ms_0_polls": statistics.median(alone),
        f"p50_ms_{polls}_polls": statistics.median(crowded),
        "ratio": statistics.median(crowded) / statistics.median(alone),
    }


async def end_to_end_shared(servers: list[Server], total: int) -> dict[str, float]:
    """e2e with two coordinators on one PostgreSQL database: the producer sends its batches
    to each in turn, and one worker is connected to each. Each worker stops after half the
    jobs; the other then takes whatever is left, so every job runs once either way."""
    half = total // 2
    workers = [_start_worker(server.address, "count", half, 100) for server in servers]
    request = pb.EnqueueBatchRequest(jobs=[_spec() for _ in range(100)])
    channels = [grpc.aio.insecure_channel(server.address) for server in servers]
    try:
        stubs = [rpc.CoordinatorServiceStub(channel) for channel in channels]
        start = time.time()
        for i in range(total // 100):
            await stubs[i % len(stubs)].EnqueueBatch(request)
        reports = await asyncio.gather(*(asyncio.to_thread(_worker_report, w) for w in workers))
        elapsed = max(report["finished_at"] for report in reports) - start
        succeeded = await _count_succeeded(stubs[0])
    finally:
        for channel in channels:
            await channel.close(None)
    if succeeded < half * len(servers):
        raise RuntimeError(f"only {succeeded} of {total} jobs SUCCEEDED")
    return {"jobs_per_s": half * len(servers) / elapsed}


def _fill_queue(server: Server, seed_id: str, first: int, extra: int) -> None:
    """Copies the seed job's row `extra` times, inside the database (one INSERT ... SELECT
    over a generated series), with ids that sort after every real one: a deep queue in
    seconds instead of an enqueue RPC per job. Then ANALYZE, as autovacuum would have by
    the time a real queue was that deep."""
    if server.pg_url is not None:
        import psycopg

        url = server.db.replace("+psycopg", "")
        with psycopg.connect(url, autocommit=True) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'jobs' AND column_name <> 'id'"
                )
            ]
            columns = ", ".join(names)
            conn.execute(
                f"INSERT INTO jobs (id, {columns}) "  # nosec B608 # names from the catalogue
                f"SELECT 'f' || lpad(g::text, 31, '0'), {columns} "
                "FROM jobs, generate_series(%s::bigint, %s::bigint) AS g WHERE jobs.id = %s",
                (first, first + extra - 1, seed_id),
            )
            conn.execute("ANALYZE jobs")
        return
    import sqlite3

    db = sqlite3.connect(server.db.removeprefix("sqlite:///"), timeout=60)
    try:
        names = [row[1] for row in db.execute("PRAGMA table_info(jobs)") if row[1] != "id"]
        columns = ", ".join(names)
        with db:
            db.execute(
                "WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                f"INSERT INTO jobs (id, {columns}) "  # nosec B608 # names from the catalogue
                f"SELECT printf('f%031d', n), {columns} FROM jobs, g WHERE jobs.id = ?",
                (first, first + extra - 1, seed_id),
            )
        db.execute("ANALYZE")
    finally:
        db.close()


async def lease_at_depth(server: Server, depths: list[int], samples: int) -> dict[str, float]:
    """Lease latency (one Lease of one job, no wait, then its receipt, untimed) with
    `depths[0]` jobs waiting, then with the queue filled up to `depths[1]`."""
    figures: dict[str, float] = {}
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        seed = await stub.Enqueue(pb.EnqueueRequest(job=_spec()))
        waiting, filled = 1, 0
        for depth in depths:
            await asyncio.to_thread(_fill_queue, server, seed.job_id, filled, depth - waiting)
            filled += depth - waiting
            waiting = depth
            latencies = []
            for _ in range(samples):
                start = time.perf_counter()
                reply = await stub.Lease(
                    pb.LeaseRequest(worker_id="bench", queues=[QUEUE], max_jobs=1)
                )
                latencies.append((time.perf_counter() - start) * 1000)
                for job in reply.jobs:
                    await stub.Receipt(
                        pb.ReceiptRequest(
                            job_id=job.job_id,
                            lease_token=job.lease_token,
                            outcome=pb.OUTCOME_SUCCESS,
                        )
                    )
                waiting -= len(reply.jobs)
            latencies.sort()
            figures[f"p50_ms_{depth}"] = statistics.median(latencies)
            figures[f"p99_ms_{depth}"] = latencies[
                min(len(latencies) - 1, int(len(latencies) * 0.99))
            ]
    figures["p50_ratio"] = figures[f"p50_ms_{depths[1]}"] / figures[f"p50_ms_{depths[0]}"]
    return figures


Scenario = Callable[[list[Server]], Coroutine[Any, Any, dict[str, float]]]


async def run_once(
    name: str, scenario: Scenario, args: argparse.Namespace, coordinators: int = 1
) -> dict[str, float]:
    pg_url = args.pg_url if args.db == "postgresql" else None
    servers = [Server(args.synchronous, args.log_level, pg_url)]
    try:
        await servers[0].wait_ready()  # the database is migrated before the second starts
        for _ in range(coordinators - 1):
            servers.append(Server(args.synchronous, args.log_level, shared_with=servers[0]))
            await servers[-1].wait_ready()
        cpu_before = sum(server.cpu_seconds() for server in servers)
        figures = await scenario(servers)
        figures["server_cpu_s"] = sum(server.cpu_seconds() for server in servers) - cpu_before
        return figures
    finally:
        for server in reversed(servers):  # the first one drops the database
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=[
            "single",
            "batch",
            "e2e",
            "latency",
            "e2e-throttled",
            "throttle",
            "idle-polls",
            "e2e-2coord",
            "lease-depth",
        ],
        action="append",
    )
    parser.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--log-level", default="warning", help="coordinator log level")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs for the e2e run")
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to create the bench databases from (--db postgresql)",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=1_000_000,
        help="lease-depth: the deep queue's jobs (the shallow one holds 1,000)",
    )
    args = parser.parse_args()

    scenarios: dict[str, Scenario] = {
        "single": lambda servers: enqueue_single(servers[0].address, 8_000),
        "batch": lambda servers: enqueue_batch(servers[0].address, 50_000),
        "e2e": lambda servers: end_to_end(servers[0].address, args.jobs),
        "latency": lambda servers: start_latency(servers[0].address, 300),
        "e2e-throttled": lambda servers: end_to_end(servers[0].address, args.jobs, throttled=True),
        "throttle": lambda servers: throttle_accuracy(servers[0].address),
        "idle-polls": lambda servers: idle_long_polls(servers[0].address),
        "e2e-2coord": lambda servers: end_to_end_shared(servers, args.jobs),
        "lease-depth": lambda servers: lease_at_depth(servers[0], [1_000, args.depth], 300),
    }
    # Two coordinators need a database they can share.
    coordinators = {"e2e-2coord": 2}
    chosen = args.only or [
        name for name in scenarios if name not in coordinators or args.db == "postgresql"
    ]
    if args.db != "postgresql" and any(name in coordinators for name in chosen):
        parser.error("e2e-2coord needs --db postgresql (SQLite admits one coordinator)")
    print(
        f"# {os.cpu_count()} cores, {args.db}, SQLite synchronous={args.synchronous}, "
        f"coordinator log level {args.log_level}, median of {args.runs} runs"
    )
    for name in chosen:
        runs = [
            asyncio.run(run_once(name, scenarios[name], args, coordinators.get(name, 1)))
            for _ in range(args.runs)
        ]
        for key in runs[0]:
            values = [run[key] for run in runs]
            print(
                f"{name:8s} {key:14s} median {statistics.median(values):10.1f}   "
                f"(min {min(values):.1f}, max {max(values):.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
