"""Issue 9, item 5: three coordinator processes on one PostgreSQL database, SDK workers
spread over them, jobs enqueued through all of them, the cron leader SIGKILLed and restarted
mid-run, a 1-second cron schedule throughout. Every acknowledged job succeeds, no job is ever
held by two valid leases at once, nothing acknowledged is lost, each cron fire happens exactly
once (chaos_checks.py says how each is judged). The full-size run is
`python bench/chaos.py --jobs 20000`."""

from __future__ import annotations

from pathlib import Path

from chaos_harness import ChaosConfig, run_chaos
from databases import PostgresServer

# A guard against hanging, not a timed assertion: every wait in the run is on a condition.
GUARD_SECONDS = 300.0


async def test_chaos_with_three_coordinators_one_sigkilled_and_a_cron_schedule(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    config = ChaosConfig(jobs=3000, coordinators=3, deadline=GUARD_SECONDS, log_dir=tmp_path)
    report = await run_chaos(config, postgres.create_database())
    print(report.summary())
    assert report.violations == [], "\n".join([report.summary(), *report.violations[:30]])
    assert report.acknowledged == config.jobs == report.jobs_in_db
    assert len(report.kills) == 1
    assert report.fires >= 1
