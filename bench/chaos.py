"""The multi-coordinator chaos run (issue 9, item 5) at full size:

    python bench/chaos.py --jobs 20000                 # 3 coordinators, one SIGKILL mid-run
    python bench/chaos.py --jobs 20000 --kill-every 10 # a SIGKILL every 10 s till all done

N `conveyor serve` processes on one fresh PostgreSQL database (--pg-url's server; dropped
after), Python SDK workers spread over them, a 1-second cron schedule throughout. It checks
that every acknowledged job succeeded with exactly one accepted success, that no job was held
by two valid leases at once, that nothing acknowledged was lost and that each cron fire
happened exactly once (tests/chaos/chaos_checks.py), prints what it saw and how long it took,
and exits 1 on any violation. tests/chaos/test_chaos.py is the same run, smaller, in the
suite."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "chaos")]

from chaos_harness import ChaosConfig, run_chaos  # noqa: E402
from databases import PG_ADMIN_URL, PostgresServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--coordinators", type=int, default=3)
    parser.add_argument("--workers-per-coordinator", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20, help="slots per worker")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="SIGKILL a coordinator (round robin) this often until the jobs are done "
        "(default: once, the cron leader, at 30%% of the enqueues)",
    )
    parser.add_argument(
        "--lease-seconds", type=float, default=4.0, help="every job's lease duration"
    )
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="the PostgreSQL server to use")
    args = parser.parse_args()
    # The workers' warnings (receipts refused after a lease expired during the kill, ...) are
    # the chaos working as meant; errors still show.
    logging.getLogger("conveyor").setLevel(logging.ERROR)
    # SIGTERM unwinds like Ctrl-C, so that the coordinators started are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log_dir = Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
    config = ChaosConfig(
        jobs=args.jobs,
        coordinators=args.coordinators,
        workers_per_coordinator=args.workers_per_coordinator,
        concurrency=args.concurrency,
        kill_every=args.kill_every,
        lease_seconds=args.lease_seconds,
        log_dir=log_dir,
    )
    server = PostgresServer(args.pg_url)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    try:
        report = asyncio.run(run_chaos(config, server.create_database(), say))
    finally:
        server.close()
    print(report.summary())
    for violation in report.violations[:50]:
        print("VIOLATION:", violation)
    print(f"coordinator logs: {log_dir}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
