"""A schedule's job template keeps every JobSpec field: walks the JobSpec descriptor, sets a
non-default value on each field a template may carry, and follows them through
CreateSchedule -> GetSchedule -> a fire -> the enqueued job. A field added to JobSpec later
fails this test until it has a sample value here (and then it is checked like the rest)."""

from __future__ import annotations

import dataclasses

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

# A template may not set these: the cron decides when, and each fire is enqueued once.
NOT_IN_TEMPLATES = {"run_at", "delay", "idempotency_key"}


def sample_values(parent_job_id: str) -> dict[str, object]:
    return {
        "queue": "reports",
        "task_type": "build",
        "payload": b"\x00\x01payload",
        "priority": 7,
        "max_attempts": 3,
        "lease_duration": Duration(seconds=45),
        "retry_policy": pb.RetryPolicy(
            initial_backoff=Duration(seconds=2),
            multiplier=3.0,
            max_backoff=Duration(seconds=600),
            jitter=0.1,
        ),
        "parent_job_id": parent_job_id,
        "throttle_key": "tenant-1",
        "task_version": "1.2.3",
    }


def full_template(parent_job_id: str) -> pb.JobSpec:
    samples = sample_values(parent_job_id)
    template = pb.JobSpec()
    for field in pb.JobSpec.DESCRIPTOR.fields:
        if field.name in NOT_IN_TEMPLATES:
            continue
        assert field.name in samples, f"JobSpec.{field.name} is new: give it a sample value"
        value = samples[field.name]
        if field.message_type is not None:
            getattr(template, field.name).CopyFrom(value)
        else:
            setattr(template, field.name, value)
    return template


def assert_every_field_set(template: pb.JobSpec) -> None:
    for field in pb.JobSpec.DESCRIPTOR.fields:
        if field.name not in NOT_IN_TEMPLATES:
            is_set = (
                template.HasField(field.name)
                if field.has_presence
                else getattr(template, field.name) != field.default_value
            )
            assert is_set, field.name


async def test_every_job_spec_field_survives_create_get_and_fire(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    parent = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="other", task_type="p")))
    template = full_template(parent.job_id)
    assert_every_field_set(template)
    created = await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=pb.Schedule(name="s", cron="0 9 * * *", job=template))
    )
    assert created.job == template
    assert (await stub.GetSchedule(pb.GetScheduleRequest(name="s"))).job == template

    clock.set(created.next_fire_at.ToMicroseconds())
    await coordinator.cron.run_once(clock.now())
    fired = await stub.GetSchedule(pb.GetScheduleRequest(name="s"))
    assert fired.last_job_id
    job = await stub.GetJob(pb.GetJobRequest(job_id=fired.last_job_id))
    for field in pb.JobSpec.DESCRIPTOR.fields:
        if field.name in NOT_IN_TEMPLATES:
            continue
        assert field.name in pb.Job.DESCRIPTOR.fields_by_name, f"Job lacks {field.name}"
        assert getattr(job, field.name) == getattr(template, field.name), field.name


async def test_an_update_without_job_in_the_mask_keeps_the_whole_template(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    parent = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="other", task_type="p")))
    template = full_template(parent.job_id)
    await stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=pb.Schedule(name="s", cron="0 9 * * *", job=template))
    )
    updated = await stub.UpdateSchedule(
        pb.UpdateScheduleRequest(
            schedule=pb.Schedule(name="s", cron="0 10 * * *"), update_mask=FieldMask(paths=["cron"])
        )
    )
    assert updated.job == template


async def test_a_template_that_no_longer_validates_skips_its_fire_and_moves_on(
    server_config: ServerConfig, clock: FakeClock
) -> None:
    template = pb.JobSpec(queue="reports", task_type="build", payload=b"x" * 200_000)
    first = await Coordinator.start(server_config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            created = await rpc.CoordinatorServiceStub(channel).CreateSchedule(
                pb.CreateScheduleRequest(
                    schedule=pb.Schedule(name="s", cron="0 9 * * *", job=template)
                )
            )
    finally:
        await first.stop(grace=1.0)
    smaller = dataclasses.replace(server_config, max_payload_bytes=100_000)
    second = await Coordinator.start(smaller, clock=clock)
    try:
        clock.set(created.next_fire_at.ToMicroseconds())
        await second.cron.run_once(clock.now())
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            after = await stub.GetSchedule(pb.GetScheduleRequest(name="s"))
            listed = await stub.ListJobs(pb.ListJobsRequest(queue="reports"))
    finally:
        await second.stop(grace=1.0)
    assert after.last_job_id == "" and list(listed.jobs) == []
    assert after.next_fire_at.ToMicroseconds() > created.next_fire_at.ToMicroseconds()
