"""Bounded requests and replies: batch and lease limits, short error messages for huge values,
a capped attempt history, and undecodable request bytes refused as INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from conveyor_server.store.dialects import sync_url
from google.protobuf.field_mask_pb2 import FieldMask
from server_wire import QUEUE, TASK, Wire, refused

HUGE = "x" * 20_000
SHORT_MESSAGE = 300  # characters: a status message quotes at most a short prefix of a value


@pytest.mark.parametrize("field", ["heartbeats", "receipts"])
async def test_a_batch_of_1001_items_is_refused_before_any_item_is_handled(
    wire: Wire, field: str
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    call: Any
    if field == "heartbeats":
        item = pb.HeartbeatRequest(job_id=leased.job_id, lease_token=leased.lease_token)
        call = wire.stub.HeartbeatBatch(pb.HeartbeatBatchRequest(heartbeats=[item] * 1001))
    else:
        item = pb.ReceiptRequest(
            job_id=leased.job_id, lease_token=leased.lease_token, outcome=pb.OUTCOME_SUCCESS
        )
        call = wire.stub.ReceiptBatch(pb.ReceiptBatchRequest(receipts=[item] * 1001))
    message = await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert f"{field} has 1001 entries" in message
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED


async def test_a_heartbeat_batch_of_1000_items_is_answered_item_by_item(wire: Wire) -> None:
    item = pb.HeartbeatRequest(job_id="no-such-job", lease_token="t")
    reply = await wire.stub.HeartbeatBatch(pb.HeartbeatBatchRequest(heartbeats=[item] * 1000))
    assert {r.code for r in reply.results} == {grpc.StatusCode.NOT_FOUND.value[0]}
    assert len(reply.results) == 1000


async def test_a_lease_of_more_than_1000_queue_task_type_pairs_is_refused(wire: Wire) -> None:
    refs = [pb.TaskTypeRef(name=f"t{i}") for i in range(501)]
    request = pb.LeaseRequest(worker_id="w", queues=["a", "b"], task_types=refs)
    message = await refused(wire.stub.Lease(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "queues x task_types is 2 x 501" in message


async def test_a_lease_of_exactly_1000_pairs_is_accepted(wire: Wire) -> None:
    refs = [pb.TaskTypeRef(name=f"t{i}") for i in range(500)]
    request = pb.LeaseRequest(worker_id="w", queues=["a", "b"], task_types=refs)
    assert list((await wire.stub.Lease(request)).jobs) == []


def _spec(**fields: Any) -> pb.JobSpec:
    return pb.JobSpec(**{"queue": QUEUE, "task_type": TASK, **fields})


HUGE_VALUES: dict[str, Callable[[rpc.CoordinatorServiceStub], Any]] = {
    "Enqueue job.queue": lambda s: s.Enqueue(pb.EnqueueRequest(job=_spec(queue=HUGE))),
    "Enqueue job.task_version": lambda s: s.Enqueue(
        pb.EnqueueRequest(job=_spec(task_version=HUGE))
    ),
    "Enqueue job.idempotency_key": lambda s: s.Enqueue(
        pb.EnqueueRequest(job=_spec(idempotency_key=HUGE))
    ),
    "Enqueue job.parent_job_id": lambda s: s.Enqueue(
        pb.EnqueueRequest(job=_spec(parent_job_id=HUGE))
    ),
    "GetJob job_id": lambda s: s.GetJob(pb.GetJobRequest(job_id=HUGE)),
    "GetSchedule name": lambda s: s.GetSchedule(pb.GetScheduleRequest(name=HUGE)),
    "GetQueue name": lambda s: s.GetQueue(pb.GetQueueRequest(name=HUGE)),
    "GetTaskType version": lambda s: s.GetTaskType(pb.GetTaskTypeRequest(name="t", version=HUGE)),
    "RegisterTaskType message_type": lambda s: s.RegisterTaskType(
        pb.RegisterTaskTypeRequest(name="t", version="1.0.0", message_type=HUGE)
    ),
    "Lease worker_id": lambda s: s.Lease(pb.LeaseRequest(worker_id=HUGE, queues=[QUEUE])),
    "Lease queues": lambda s: s.Lease(pb.LeaseRequest(worker_id="w", queues=[HUGE])),
    "Lease task_types version": lambda s: s.Lease(
        pb.LeaseRequest(
            worker_id="w", queues=[QUEUE], task_types=[pb.TaskTypeRef(name="t", version=HUGE)]
        )
    ),
    "Heartbeat lease_token": lambda s: s.Heartbeat(
        pb.HeartbeatRequest(job_id="j", lease_token=HUGE)
    ),
    "ListJobs page_token": lambda s: s.ListJobs(pb.ListJobsRequest(page_token="!" + HUGE)),
    "UpdateQueue update_mask": lambda s: s.UpdateQueue(
        pb.UpdateQueueRequest(queue=pb.Queue(name=QUEUE), update_mask=FieldMask(paths=[HUGE]))
    ),
    "CreateSchedule cron": lambda s: s.CreateSchedule(
        pb.CreateScheduleRequest(schedule=pb.Schedule(name="s", cron=HUGE, job=_spec()))
    ),
    "CreateSchedule timezone": lambda s: s.CreateSchedule(
        pb.CreateScheduleRequest(
            schedule=pb.Schedule(name="s", cron="* * * * *", timezone=HUGE, job=_spec())
        )
    ),
}


@pytest.mark.parametrize("case", list(HUGE_VALUES))
async def test_a_20000_character_value_is_invalid_argument_with_a_short_message(
    stub: rpc.CoordinatorServiceStub, case: str
) -> None:
    message = await refused(HUGE_VALUES[case](stub), grpc.StatusCode.INVALID_ARGUMENT)
    assert len(message) < SHORT_MESSAGE, message


ATTEMPTS = 4300


def _insert_history(coordinator: Coordinator, job_id: str) -> None:
    """4,300 failed attempts with 1 KB error messages: about 4.3 MB of history, more than a
    gRPC client accepts in one reply by default (4 MiB)."""
    rows = [
        {
            "job_id": job_id,
            "attempt": n,
            "started_at": n * 1000,
            "finished_at": n * 1000 + 1,
            "outcome": pb.OUTCOME_FAILURE,
            "error_message": f"{n}:" + "e" * 1000,
        }
        for n in range(1, ATTEMPTS + 1)
    ]
    engine = sa.create_engine(sync_url(coordinator.config.db_url))
    with engine.begin() as db:
        db.execute(
            sa.text(
                "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, "
                "outcome, error_message, error_type, error_non_retryable) VALUES (:job_id, "
                ":attempt, 'worker-1', :started_at, :finished_at, :outcome, :error_message, "
                "'Boom', false)"
            ),
            rows,
        )
    engine.dispose()


async def test_a_job_with_4300_attempts_is_readable_with_its_newest_100(
    coordinator: Coordinator, wire: Wire
) -> None:
    job_id = (await wire.enqueue()).job_id
    _insert_history(coordinator, job_id)

    got = await wire.get(job_id)
    cancelled = await wire.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    waited = await wire.stub.WaitJob(pb.WaitJobRequest(job_id=job_id))

    for job in (got, cancelled, waited):
        assert [a.attempt for a in job.attempts] == list(range(ATTEMPTS - 99, ATTEMPTS + 1))
    assert waited.state == pb.JOB_STATE_CANCELLED


UNDECODABLE = {
    "a truncated length": b"\x0a\xff",
    "invalid UTF-8 in a string": b"\x0a\x02\xff\xfe",
    "a field number of 0": b"\x00\x01",
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
async def test_undecodable_request_bytes_are_invalid_argument_naming_the_message(
    channel: grpc.aio.Channel, case: str
) -> None:
    call = channel.unary_unary("/conveyor.v1.CoordinatorService/GetJob")  # bytes in, bytes out
    message = await refused(call(UNDECODABLE[case]), grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("request is not a valid conveyor.v1.GetJobRequest message")


async def test_the_coordinator_answers_after_undecodable_bytes(
    channel: grpc.aio.Channel, wire: Wire
) -> None:
    call = channel.unary_unary("/conveyor.v1.CoordinatorService/Enqueue")
    await refused(call(b"\x0a\xff"), grpc.StatusCode.INVALID_ARGUMENT)
    assert (await wire.enqueue()).job_id
