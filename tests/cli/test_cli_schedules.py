"""`conveyor schedules ...` against a real coordinator."""

from __future__ import annotations

from cli_support import Conveyor
from conveyor import Client, JobSpec, MisfirePolicy, OverlapPolicy

CREATE = (
    "schedules",
    "create",
    "nightly",
    "--cron",
    "0 3 * * *",
    "--timezone",
    "Europe/Berlin",
    "--queue",
    "reports",
    "--task-type",
    "build",
    "--payload",
    "all",
    "--misfire",
    "catch-up",
    "--overlap",
    "skip",
)


async def test_schedules_create_stores_what_get_shows(conveyor: Conveyor) -> None:
    created = await conveyor(*CREATE)
    assert created.code == 0, created.stderr
    shown = (await conveyor("schedules", "get", "nightly", "--json")).json()
    assert (shown["cron"], shown["timezone"]) == ("0 3 * * *", "Europe/Berlin")
    assert (shown["misfire_policy"], shown["overlap_policy"]) == ("CATCH_UP", "SKIP")
    assert shown["job"]["payload"] == {"encoding": "utf-8", "data": "all"}
    assert shown["next_fire_at"] is not None


async def test_schedules_pause_stops_a_schedule(conveyor: Conveyor, client: Client) -> None:
    await conveyor(*CREATE)
    result = await conveyor("schedules", "pause", "nightly")
    assert result.code == 0, result.stderr
    assert (await client.get_schedule("nightly")).paused


async def test_schedules_delete_removes_it(conveyor: Conveyor) -> None:
    await conveyor(*CREATE)
    deleted = await conveyor("schedules", "delete", "nightly")
    assert deleted.code == 0, deleted.stderr
    gone = await conveyor("schedules", "get", "nightly")
    assert (gone.code, gone.stderr.split(":")[:2]) == (1, ["error", " NOT_FOUND"])


async def test_schedules_update_changes_only_the_fields_named(
    conveyor: Conveyor, client: Client
) -> None:
    template = JobSpec(queue="reports", task_type="build", payload=b"all", priority=1)
    await client.create_schedule(
        "nightly", "0 3 * * *", template, overlap_policy=OverlapPolicy.SKIP
    )
    result = await conveyor("schedules", "update", "nightly", "--priority", "7", "--paused")
    assert result.code == 0, result.stderr
    schedule = await client.get_schedule("nightly")
    assert (schedule.job.priority, schedule.job.payload, schedule.job.queue) == (
        7,
        b"all",
        "reports",
    )
    assert (schedule.paused, schedule.overlap_policy) == (True, OverlapPolicy.SKIP)
    assert schedule.misfire_policy == MisfirePolicy.RUN_ONCE


async def test_schedules_create_with_a_bad_cron_prints_invalid_argument(
    conveyor: Conveyor,
) -> None:
    result = await conveyor(
        "schedules", "create", "broken", "--cron", "not a cron", "--queue", "q", "--task-type", "t"
    )
    assert result.code == 1
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ")
