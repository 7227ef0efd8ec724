"""Validation: malformed requests are INVALID_ARGUMENT with a message naming the field, and
nothing invalid is stored. The payload limit is set small here (1 KiB)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.config import ServerConfig
from google.protobuf.duration_pb2 import Duration
from server_wire import QUEUE, TASK, Wire, refused, seconds

LIMIT = 1024


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
