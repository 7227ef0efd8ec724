"""Recurring jobs: cron in a time zone, misfire and overlap policies, exactly-once fires."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.core.schedules import next_fire_after
from conveyor_server.main import Coordinator
from google.protobuf.field_mask_pb2 import FieldMask

S = 1_000_000
BERLIN = ZoneInfo("Europe/Berlin")


def micros(moment: datetime) -> int:
    return round(moment.timestamp() * S)


def local(us: int, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromtimestamp(us / S, tz=zone)


def schedule(name: str = "nightly", cron: str = "0 9 * * *", **fields: object) -> pb.Schedule:
    return pb.Schedule(
        name=name,
        cron=cron,
        job=pb.JobSpec(queue="reports", task_type="build", payload=b"p"),
        **fields,  # type: ignore[arg-type]
    )


async def jobs_in(stub: rpc.CoordinatorServiceStub, queue: str = "reports") -> list[pb.Job]:
    return list(
        (
            await stub.ListJobs(
                pb.ListJobsRequest(queue=queue, page_size=1000, view=pb.JOB_VIEW_FULL)
            )
        ).jobs
    )


def test_six_field_cron_puts_seconds_first() -> None:
    start = micros(datetime(2026, 5, 1, 0, 0, tzinfo=ZoneInfo("UTC")))
    fire = next_fire_after("15 30 10 * * *", "UTC", start)
    assert local(fire, ZoneInfo("UTC")).strftime("%H:%M:%S") == "10:30:15"


def test_nine_in_berlin_fires_at_nine_local_on_both_sides_of_spring_change() -> None:
    # Clocks in Berlin jump from 02:00 to 03:00 on 29 March 2026.
    first = next_fire_after(
        "0 9 * * *", "Europe/Berlin", micros(datetime(2026, 3, 27, 12, tzinfo=BERLIN))
    )
    second = next_fire_after("0 9 * * *", "Europe/Berlin", first)
    assert [(local(f).day, local(f).hour) for f in (first, second)] == [(28, 9), (29, 9)]
    assert second - first == 23 * 3600 * S  # the change day is an hour short


def test_nine_in_berlin_fires_at_nine_local_across_autumn_change() -> None:
    # Clocks in Berlin go back from 03:00 to 02:00 on 25 October 2026.
    first = next_fire_after(
        "0 9 * * *", "Europe/Berlin", micros(datetime(2026, 10, 23, 12, tzinfo=BERLIN))
    )
    second = next_fire_after("0 9 * * *", "Europe/Berlin", first)
    assert [(local(f).day, local(f).hour) for f in (first, second)] == [(24, 9), (25, 9)]
    assert second - first == 25 * 3600 * S  # the change day is an hour long


def test_nonexistent_wall_time_fires_once_after_the_jump() -> None:
    before = micros(datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN))
    fire = next_fire_after("30 2 * * *", "Europe/Berlin", before)
    assert (local(fire).hour, local(fire).minute) == (3, 30)
    following = next_fire_after("30 2 * * *", "Europe/Berlin", fire)
    assert local(following).day == 30  # not a second fire on the change day


def test_repeated_wall_time_fires_once_at_first_occurrence() -> None:
    before = micros(datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN))
    fire = next_fire_after("30 2 * * *", "Europe/Berlin", before)
    assert local(fire).utcoffset().total_seconds() == 7200  # the first 02:30, still CEST
    following = next_fire_after("30 2 * * *", "Europe/Berlin", fire)
    assert local(following).day == 26


async def test_invalid_cron_is_refused_naming_the_field(stub: rpc.CoordinatorServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule(cron="0 25 * * *")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schedule.cron" in (caught.value.details() or "")


async def test_unknown_time_zone_is_refused_naming_the_field(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSchedule(
            pb.CreateScheduleRequest(schedule=schedule(timezone="Mars/Olympus_Mons"))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schedule.timezone" in (caught.value.details() or "")


async def test_duplicate_schedule_name_is_already_exists(stub: rpc.CoordinatorServiceStub) -> None:
    await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule()))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_due_fire_enqueues_the_template_once(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    created = await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule()))
    clock.set(created.next_fire_at.ToMicroseconds())
    await coordinator.cron.run_once(clock.now())
    await coordinator.cron.run_once(clock.now())
    [job] = await jobs_in(stub)
    assert (job.task_type, job.payload, job.state) == ("build", b"p", pb.JOB_STATE_AVAILABLE)
    after = await stub.GetSchedule(pb.GetScheduleRequest(name="nightly"))
    assert after.last_job_id == job.job_id
    assert after.last_fire_at == created.next_fire_at
    assert after.next_fire_at.ToMicroseconds() > created.next_fire_at.ToMicroseconds()


async def test_a_restart_in_the_middle_never_fires_twice(tmp_path: Path) -> None:
    clock = FakeClock()
    config = ServerConfig(
        db_url=f"sqlite:///{tmp_path / 'c.db'}", listen="127.0.0.1:0", log_level="warning"
    )
    first = await Coordinator.start(config, clock=clock)
    async with grpc.aio.insecure_channel(first.address) as channel:
        created = await rpc.CoordinatorServiceStub(channel).CreateSchedule(
            pb.CreateScheduleRequest(schedule=schedule(cron="* * * * *"))
        )
    fire_at = created.next_fire_at.ToMicroseconds()
    clock.set(fire_at)
    await first.cron.run_once(clock.now())
    await first.stop(grace=1)
    # A second coordinator on the same database, whose schedule row still says "due"
    # (as after a crash between the fire and the schedule update), must not fire again.
    second = await Coordinator.start(config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            await stub.UpdateSchedule(
                pb.UpdateScheduleRequest(
                    schedule=schedule(cron="* * * * *"), update_mask=FieldMask(paths=["job"])
                )
            )
            store = second._store
            await store.update_schedule(
                "nightly", lambda s: type(s)(s.spec, fire_at, s.last_fire_at, s.last_job_id)
            )
            await second.cron.run_once(clock.now())
            assert len(await jobs_in(stub)) == 1
    finally:
        await second.stop(grace=1)


async def test_run_once_collapses_missed_fires_into_one(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    created = await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule(cron="*/10 * * * *"))
    )
    clock.set(created.next_fire_at.ToMicroseconds() + 3600 * S)  # an hour down: 7 fires missed
    await coordinator.cron.run_once(clock.now())
    assert len(await jobs_in(stub)) == 1


async def test_catch_up_runs_missed_fires_up_to_the_limit(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    spec = schedule(
        cron="*/10 * * * *", misfire_policy=pb.MISFIRE_POLICY_CATCH_UP, catch_up_limit=4
    )
    created = await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec))
    clock.set(created.next_fire_at.ToMicroseconds() + 3600 * S)
    await coordinator.cron.run_once(clock.now())
    assert len(await jobs_in(stub)) == 4


async def test_skip_drops_fires_missed_by_more_than_the_grace(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    spec = schedule(cron="0 * * * *", misfire_policy=pb.MISFIRE_POLICY_SKIP)
    created = await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec))
    clock.set(created.next_fire_at.ToMicroseconds() + 30 * 60 * S)  # half an hour late
    await coordinator.cron.run_once(clock.now())
    assert await jobs_in(stub) == []
    after = await stub.GetSchedule(pb.GetScheduleRequest(name="nightly"))
    assert after.next_fire_at.ToMicroseconds() > clock.now()


async def test_overlap_skip_waits_for_the_previous_run(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    spec = schedule(cron="* * * * *", overlap_policy=pb.OVERLAP_POLICY_SKIP)
    created = await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=spec))
    clock.set(created.next_fire_at.ToMicroseconds())
    await coordinator.cron.run_once(clock.now())
    clock.advance(60)
    await coordinator.cron.run_once(clock.now())  # the first run is still AVAILABLE
    assert len(await jobs_in(stub)) == 1
    [first] = await jobs_in(stub)
    await stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id))
    clock.advance(60)
    await coordinator.cron.run_once(clock.now())
    assert len(await jobs_in(stub)) == 2


async def test_paused_schedule_does_not_fire_and_resume_skips_the_pause(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    created = await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule(cron="* * * * *"))
    )
    await stub.PauseSchedule(pb.PauseScheduleRequest(name="nightly"))
    clock.set(created.next_fire_at.ToMicroseconds() + 600 * S)
    await coordinator.cron.run_once(clock.now())
    assert await jobs_in(stub) == []
    resumed = await stub.ResumeSchedule(pb.ResumeScheduleRequest(name="nightly"))
    assert resumed.next_fire_at.ToMicroseconds() > clock.now()


async def test_update_with_mask_changes_only_named_fields(stub: rpc.CoordinatorServiceStub) -> None:
    await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule()))
    updated = await stub.UpdateSchedule(
        pb.UpdateScheduleRequest(
            schedule=pb.Schedule(name="nightly", cron="0 10 * * *"),
            update_mask=FieldMask(paths=["cron"]),
        )
    )
    assert (updated.cron, updated.job.task_type) == ("0 10 * * *", "build")


async def test_deleted_schedule_is_not_found(stub: rpc.CoordinatorServiceStub) -> None:
    await stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule()))
    await stub.DeleteSchedule(pb.DeleteScheduleRequest(name="nightly"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSchedule(pb.GetScheduleRequest(name="nightly"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
