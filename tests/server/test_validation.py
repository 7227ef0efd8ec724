"""Validation: malformed requests are INVALID_ARGUMENT with a message naming the field, and
nothing invalid is stored. The payload limit is set small here (1 KiB)."""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.config import ServerConfig
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from server_wire import QUEUE, TASK, Wire, refused, seconds

LIMIT = 1024
YEAR = 365 * 24 * 3600
CENTURY_AND_A_DAY = Duration(seconds=36_525 * 24 * 3600 + 24 * 3600)


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, max_payload_bytes=LIMIT)


INVALID_SPECS: dict[str, tuple[dict[str, Any], str]] = {
    "queue with a space and !": ({"queue": "bad queue!"}, "job.queue"),
    "empty queue": ({"queue": ""}, "job.queue"),
    "queue of 200 characters": ({"queue": "q" * 200}, "job.queue"),
    "queue with a slash": ({"queue": "a/b"}, "job.queue"),
    "task_type with a space": ({"task_type": "send email"}, "job.task_type"),
    "empty task_type": ({"task_type": ""}, "job.task_type"),
    "task_type of 129 characters": ({"task_type": "t" * 129}, "job.task_type"),
    "payload over the limit": ({"payload": b"x" * (LIMIT + 1)}, "job.payload"),
    "negative delay": ({"delay": Duration(seconds=-1)}, "job.delay"),
    "negative lease_duration": ({"lease_duration": Duration(seconds=-30)}, "job.lease_duration"),
    "lease_duration under 1 s": ({"lease_duration": seconds(0.5)}, "job.lease_duration"),
    "negative max_attempts": ({"max_attempts": -1}, "job.max_attempts"),
    "jitter below 0": (
        {"retry_policy": pb.RetryPolicy(jitter=-0.1)},
        "job.retry_policy.jitter",
    ),
    "jitter above 1": ({"retry_policy": pb.RetryPolicy(jitter=1.5)}, "job.retry_policy.jitter"),
    "jitter not a number": (
        {"retry_policy": pb.RetryPolicy(jitter=math.nan)},
        "job.retry_policy.jitter",
    ),
    "negative initial_backoff": (
        {"retry_policy": pb.RetryPolicy(initial_backoff=Duration(seconds=-1))},
        "job.retry_policy.initial_backoff",
    ),
    "multiplier below 1": (
        {"retry_policy": pb.RetryPolicy(multiplier=0.5)},
        "job.retry_policy.multiplier",
    ),
    "delay of -1 ns": ({"delay": Duration(nanos=-1)}, "job.delay"),
    "delay over 100 years": ({"delay": CENTURY_AND_A_DAY}, "job.delay"),
    "delay outside the Duration range": (
        {"delay": Duration(seconds=315_576_000_001)},
        "job.delay",
    ),
    "run_at in year 10000": ({"run_at": Timestamp(seconds=253_402_300_800)}, "job.run_at"),
    "run_at before year 1": ({"run_at": Timestamp(seconds=-62_135_596_801)}, "job.run_at"),
    "initial_backoff of 9.2e12 s": (
        {"retry_policy": pb.RetryPolicy(initial_backoff=Duration(seconds=9_200_000_000_000))},
        "job.retry_policy.initial_backoff",
    ),
    "max_backoff over 100 years": (
        {"retry_policy": pb.RetryPolicy(max_backoff=CENTURY_AND_A_DAY)},
        "job.retry_policy.max_backoff",
    ),
    "initial_backoff of -1 ns": (
        {"retry_policy": pb.RetryPolicy(initial_backoff=Duration(nanos=-1))},
        "job.retry_policy.initial_backoff",
    ),
    "multiplier infinite": (
        {"retry_policy": pb.RetryPolicy(multiplier=math.inf)},
        "job.retry_policy.multiplier",
    ),
    "lease_duration of 100 years": (
        {"lease_duration": Duration(seconds=100 * YEAR)},
        "job.lease_duration",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_SPECS))
async def test_an_invalid_job_spec_is_refused_naming_the_field(wire: Wire, case: str) -> None:
    fields, field_name = INVALID_SPECS[case]
    spec = {"queue": QUEUE, "task_type": TASK, **fields}
    message = await refused(
        wire.stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(**spec))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_name in message
    assert await wire.jobs() == []


async def test_names_at_the_limits_are_accepted(wire: Wire) -> None:
    reply = await wire.enqueue(queue="Q" * 128, task_type="a.b_c-9")
    assert (await wire.get(reply.job_id)).queue == "Q" * 128


async def test_a_payload_of_exactly_the_limit_is_accepted(wire: Wire) -> None:
    reply = await wire.enqueue(payload=b"x" * LIMIT)
    assert len((await wire.get(reply.job_id)).payload) == LIMIT


async def test_zero_max_attempts_means_the_default(wire: Wire) -> None:
    reply = await wire.enqueue(max_attempts=0)
    assert (await wire.get(reply.job_id)).max_attempts == 20


async def test_jitter_of_exactly_0_and_1_is_accepted(wire: Wire) -> None:
    for jitter in (0.0, 1.0):
        reply = await wire.enqueue(retry_policy=pb.RetryPolicy(jitter=jitter))
        assert (await wire.get(reply.job_id)).retry_policy.jitter == jitter


async def test_a_result_over_the_limit_is_refused_and_the_job_stays_leased(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.succeed(leased, result=b"r" * (LIMIT + 1)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "result" in message
    job = await wire.get(leased.job_id)
    assert (job.state, job.result) == (pb.JOB_STATE_LEASED, b"")
    assert (await wire.succeed(leased, result=b"r" * LIMIT)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_checkpoint_over_the_limit_is_refused_and_not_stored(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.heartbeat(leased, checkpoint=b"c" * (LIMIT + 1)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "checkpoint" in message
    assert (await wire.get(leased.job_id)).checkpoint == b""


async def test_a_negative_retry_after_is_refused(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.fail(leased, retry_after=Duration(seconds=-5)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "retry_after" in message
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED


INVALID_LEASES: dict[str, tuple[pb.LeaseRequest, str]] = {
    "no worker_id": (pb.LeaseRequest(queues=[QUEUE]), "worker_id"),
    "worker_id with a space": (pb.LeaseRequest(worker_id="a b", queues=[QUEUE]), "worker_id"),
    "no queues": (pb.LeaseRequest(worker_id="w"), "queues"),
    "a malformed queue": (pb.LeaseRequest(worker_id="w", queues=[QUEUE, "bad!"]), "queues[1]"),
    "a negative wait": (
        pb.LeaseRequest(worker_id="w", queues=[QUEUE], wait=Duration(seconds=-1)),
        "wait",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_LEASES))
async def test_an_invalid_lease_request_is_refused_naming_the_field(wire: Wire, case: str) -> None:
    request, field_name = INVALID_LEASES[case]
    await wire.enqueue()
    message = await refused(wire.stub.Lease(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_name in message
    assert [j.state for j in await wire.jobs()] == [pb.JOB_STATE_AVAILABLE]


async def test_a_receipt_without_a_lease_token_is_refused(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.receipt(leased, pb.OUTCOME_SUCCESS, token=""), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "lease_token" in message


async def test_backoffs_and_delays_of_100_years_are_accepted(wire: Wire) -> None:
    century = Duration(seconds=36_525 * 24 * 3600)
    policy = pb.RetryPolicy(initial_backoff=century, max_backoff=century)
    reply = await wire.enqueue(delay=century, retry_policy=policy)
    job = await wire.get(reply.job_id)
    assert job.retry_policy.initial_backoff == century


async def test_run_at_on_the_last_second_of_year_9999_is_accepted(wire: Wire) -> None:
    last = Timestamp(seconds=253_402_300_799)
    reply = await wire.enqueue(run_at=last)
    assert (await wire.get(reply.job_id)).run_at == last


async def test_a_heartbeat_extend_by_of_minus_1_ns_is_refused(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.heartbeat(leased, extend_by=Duration(nanos=-1)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "extend_by" in message


async def test_a_retry_after_over_100_years_is_refused(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.fail(leased, retry_after=CENTURY_AND_A_DAY), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "retry_after" in message
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED


async def test_a_lease_wait_of_minus_1_ns_is_refused(wire: Wire) -> None:
    request = pb.LeaseRequest(worker_id="w", queues=[QUEUE], wait=Duration(nanos=-1))
    message = await refused(wire.stub.Lease(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "wait" in message


INVALID_QUEUES: dict[str, tuple[dict[str, Any], str]] = {
    "rate of 5e-324": ({"rate_limit": pb.RateLimit(rate=5e-324, burst=1)}, "rate_limit.rate"),
    "per-key rate of 1e-14": (
        {"per_key_rate_limit": pb.RateLimit(rate=1e-14, burst=1)},
        "per_key_rate_limit.rate",
    ),
    "rate of 1e7": ({"rate_limit": pb.RateLimit(rate=1e7, burst=1)}, "rate_limit.rate"),
    "rate infinite": ({"rate_limit": pb.RateLimit(rate=math.inf, burst=1)}, "rate_limit.rate"),
    "burst over a million": (
        {"rate_limit": pb.RateLimit(rate=1, burst=1_000_001)},
        "rate_limit.burst",
    ),
    "negative burst": ({"rate_limit": pb.RateLimit(rate=1, burst=-1)}, "rate_limit.burst"),
    "bucket refilling in over 100 years": (
        {"rate_limit": pb.RateLimit(rate=1e-6, burst=10_000)},
        "rate_limit",
    ),
    "retention of 1e13 s": (
        {"retention": pb.RetentionPolicy(succeeded=Duration(seconds=10**13))},
        "queue.retention.succeeded",
    ),
    "retention of -1 ns": (
        {"retention": pb.RetentionPolicy(failed=Duration(nanos=-1))},
        "queue.retention.failed",
    ),
    "max_concurrency over a million": ({"max_concurrency": 1_000_001}, "queue.max_concurrency"),
    "queue backoff of 1e13 s": (
        {"retry_policy": pb.RetryPolicy(max_backoff=Duration(seconds=10**13))},
        "queue.retry_policy.max_backoff",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_QUEUES))
async def test_an_out_of_range_queue_setting_is_refused_naming_the_field(
    wire: Wire, case: str
) -> None:
    fields, field_name = INVALID_QUEUES[case]
    request = pb.UpdateQueueRequest(queue=pb.Queue(name=QUEUE, **fields))
    message = await refused(wire.stub.UpdateQueue(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_name in message


async def test_the_extreme_rates_within_bounds_are_accepted(wire: Wire) -> None:
    slow = pb.RateLimit(rate=1e-6, burst=3000)  # refills in about 95 years
    fast = pb.RateLimit(rate=1e6, burst=1_000_000)
    request = pb.UpdateQueueRequest(
        queue=pb.Queue(name=QUEUE, rate_limit=slow, per_key_rate_limit=fast)
    )
    queue = await wire.stub.UpdateQueue(request)
    assert (queue.rate_limit, queue.per_key_rate_limit) == (slow, fast)


def _schedule(**fields: Any) -> pb.Schedule:
    spec: dict[str, Any] = {
        "name": "nightly",
        "cron": "0 3 * * *",
        "job": pb.JobSpec(queue=QUEUE, task_type=TASK),
        **fields,
    }
    return pb.Schedule(**spec)


INVALID_SCHEDULES: dict[str, tuple[pb.Schedule, str]] = {
    "cron on 30 February": (_schedule(cron="0 0 30 2 *"), "schedule.cron"),
    "cron on 31 April, seconds first": (_schedule(cron="0 0 0 31 4 *"), "schedule.cron"),
    "cron of 20,000 characters": (_schedule(cron="*" * 20_000), "schedule.cron"),
    "time zone that is a directory": (_schedule(timezone="Europe"), "schedule.timezone"),
    "time zone of spaces": (_schedule(timezone="   "), "schedule.timezone"),
    "time zone that is a path": (_schedule(timezone="../zoneinfo/UTC"), "schedule.timezone"),
    "time zone of 300 characters": (_schedule(timezone="A/" * 150), "schedule.timezone"),
    "template backoff of 1e13 s": (
        _schedule(
            job=pb.JobSpec(
                queue=QUEUE,
                task_type=TASK,
                retry_policy=pb.RetryPolicy(initial_backoff=Duration(seconds=10**13)),
            )
        ),
        "schedule.job.retry_policy.initial_backoff",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_SCHEDULES))
async def test_an_invalid_schedule_is_refused_naming_the_field(wire: Wire, case: str) -> None:
    schedule, field_name = INVALID_SCHEDULES[case]
    request = pb.CreateScheduleRequest(schedule=schedule)
    message = await refused(wire.stub.CreateSchedule(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_name in message
    assert len(message) < 300


async def test_a_cron_that_fires_only_on_leap_days_is_accepted(wire: Wire) -> None:
    request = pb.CreateScheduleRequest(schedule=_schedule(cron="0 0 29 2 *"))
    assert (await wire.stub.CreateSchedule(request)).cron == "0 0 29 2 *"


async def test_an_update_mask_of_20000_characters_is_refused_briefly(wire: Wire) -> None:
    request = pb.UpdateQueueRequest(
        queue=pb.Queue(name=QUEUE), update_mask=FieldMask(paths=["x" * 20_000])
    )
    message = await refused(wire.stub.UpdateQueue(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "update_mask" in message
    assert len(message) < 300


LIST_CALLS: dict[str, Any] = {
    "ListJobs": lambda stub, token: stub.ListJobs(pb.ListJobsRequest(page_token=token)),
    "ListQueues": lambda stub, token: stub.ListQueues(pb.ListQueuesRequest(page_token=token)),
    "ListSchedules": lambda stub, token: stub.ListSchedules(
        pb.ListSchedulesRequest(page_token=token)
    ),
    "ListTaskTypes": lambda stub, token: stub.ListTaskTypes(
        pb.ListTaskTypesRequest(page_token=token)
    ),
}


@pytest.mark.parametrize("rpc_name", list(LIST_CALLS))
async def test_a_forged_page_token_error_names_the_list_rpc(wire: Wire, rpc_name: str) -> None:
    message = await refused(
        LIST_CALLS[rpc_name](wire.stub, "not base64!"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert message.startswith(f"{rpc_name}: page_token")


async def test_a_task_type_page_token_without_a_version_names_list_task_types(
    wire: Wire,
) -> None:
    token = base64.urlsafe_b64encode(b"email@not-a-version").decode()
    message = await refused(
        wire.stub.ListTaskTypes(pb.ListTaskTypesRequest(page_token=token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message.startswith("ListTaskTypes: page_token")
