"""The Prometheus endpoint, scraped over HTTP and parsed with prometheus_client's parser after
real job lives driven over gRPC on the fake clock (so wait and run times are exact)."""

from __future__ import annotations

import grpc
import httpx
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.observability.metrics import MAX_LABEL_VALUES, OTHER, LabelCap
from google.protobuf.field_mask_pb2 import FieldMask
from prometheus_client.parser import text_string_to_metric_families

QUEUE = "emails"
TASK = "send"


async def scrape(coordinator: Coordinator) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    address = coordinator.http_addresses()["metrics"]
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://{address}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def enqueue(stub: rpc.CoordinatorServiceStub, **spec: object) -> str:
    reply = await stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type=TASK, **spec))  # type: ignore[arg-type]
    )
    return reply.job_id


async def lease_one(stub: rpc.CoordinatorServiceStub) -> pb.LeasedJob:
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w1", queues=[QUEUE], max_jobs=1))
    [job] = reply.jobs
    return job


async def test_a_job_life_is_counted_and_timed(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub)
    clock.advance(2.0)  # waits 2 s from due to lease
    job = await lease_one(stub)
    clock.advance(3.0)  # runs 3 s from lease to receipt
    await stub.Receipt(
        pb.ReceiptRequest(
            job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
        )
    )
    samples = await scrape(coordinator)
    assert value(samples, "conveyor_jobs_enqueued_total", queue=QUEUE, task_type=TASK) == 1
    assert value(samples, "conveyor_jobs_leased_total", queue=QUEUE, task_type=TASK) == 1
    finished = {"queue": QUEUE, "task_type": TASK, "outcome": "succeeded"}
    assert value(samples, "conveyor_jobs_finished_total", **finished) == 1
    assert value(samples, "conveyor_job_wait_seconds_sum", queue=QUEUE) == 2.0
    assert value(samples, "conveyor_job_wait_seconds_count", queue=QUEUE) == 1
    assert value(samples, "conveyor_job_run_seconds_sum", queue=QUEUE) == 3.0
    assert value(samples, "conveyor_job_run_seconds_bucket", queue=QUEUE, le="2.5") == 0
    assert value(samples, "conveyor_job_run_seconds_bucket", queue=QUEUE, le="5.0") == 1
    assert value(samples, "conveyor_jobs", queue=QUEUE, state="succeeded") == 1
    assert value(samples, "conveyor_jobs", queue=QUEUE, state="available") == 0


async def test_a_job_that_runs_out_of_attempts_is_counted_as_retried_then_dead_lettered(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub, max_attempts=2)
    for _ in range(2):
        job = await lease_one(stub)
        await stub.Receipt(
            pb.ReceiptRequest(
                job_id=job.job_id,
                lease_token=job.lease_token,
                outcome=pb.OUTCOME_FAILURE,
                error=pb.JobError(message="boom"),
            )
        )
        clock.advance(7200)  # past any retry backoff
        await coordinator.waker.run_once(clock.now())
    samples = await scrape(coordinator)
    labels = {"queue": QUEUE, "task_type": TASK}
    assert value(samples, "conveyor_jobs_finished_total", outcome="retried", **labels) == 1
    assert value(samples, "conveyor_jobs_finished_total", outcome="failed", **labels) == 1
    assert value(samples, "conveyor_jobs_dead_lettered_total", queue=QUEUE) == 1
    # The retry waited from its due time, not from the job's creation.
    assert value(samples, "conveyor_job_wait_seconds_count", queue=QUEUE) == 2


async def test_an_expired_lease_is_counted_as_expired(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub)
    await lease_one(stub)
    clock.advance(3600)
    await coordinator.reaper.run_once(clock.now())
    samples = await scrape(coordinator)
    labels = {"queue": QUEUE, "task_type": TASK}
    assert value(samples, "conveyor_jobs_finished_total", outcome="expired", **labels) == 1


async def test_an_unconfirmed_lease_handed_back_is_counted_as_unconfirmed(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await enqueue(stub)
    request = pb.LeaseRequest(worker_id="w1", queues=[QUEUE], max_jobs=1, confirm=True)
    assert len((await stub.Lease(request)).jobs) == 1
    clock.advance(3600)
    await coordinator.reaper.run_once(clock.now())
    samples = await scrape(coordinator)
    labels = {"queue": QUEUE, "task_type": TASK}
    assert value(samples, "conveyor_jobs_finished_total", outcome="unconfirmed", **labels) == 1
    assert value(samples, "conveyor_jobs_finished_total", outcome="expired", **labels) == 0


async def test_rpc_latency_is_labelled_by_method_and_status_code(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    await enqueue(stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetJob(pb.GetJobRequest(job_id="no-such-job"))
    samples = await scrape(coordinator)
    assert value(samples, "conveyor_rpc_duration_seconds_count", method="Enqueue", code="OK") == 1
    codes = {
        dict(labels)["code"]
        for name, labels in samples
        if name == "conveyor_rpc_duration_seconds_count" and ("method", "GetJob") in labels
    }
    assert codes and codes <= {"NOT_FOUND", "INVALID_ARGUMENT"}


def test_label_values_beyond_the_cap_are_reported_as_other() -> None:
    cap = LabelCap()
    names = [f"queue-{i}" for i in range(MAX_LABEL_VALUES + 5)]
    seen = [cap(name) for name in names]
    assert seen[:MAX_LABEL_VALUES] == names[:MAX_LABEL_VALUES]
    assert set(seen[MAX_LABEL_VALUES:]) == {OTHER}
    assert cap(names[0]) == names[0]


async def test_a_schedule_fire_is_counted_per_schedule_and_a_late_one_as_a_misfire(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    await stub.CreateSchedule(
        pb.CreateScheduleRequest(
            schedule=pb.Schedule(
                name="hourly",
                cron="0 * * * *",
                timezone="UTC",
                job=pb.JobSpec(queue=QUEUE, task_type=TASK),
            )
        )
    )
    clock.advance(3600)
    await coordinator.cron.run_once(clock.now())
    clock.advance(3.5 * 3600)  # "down" past three fires: the newest runs 30 min late
    await coordinator.cron.run_once(clock.now())
    samples = await scrape(coordinator)
    assert value(samples, "conveyor_schedule_fires_total", schedule="hourly") == 2
    assert value(samples, "conveyor_schedule_misfires_total", schedule="hourly") >= 1
    assert value(samples, "conveyor_jobs_enqueued_total", queue=QUEUE, task_type=TASK) == 2


async def test_a_claim_held_back_by_the_rate_limit_is_counted_as_throttled(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    await stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name=QUEUE, rate_limit=pb.RateLimit(rate=0.001, burst=1)),
            update_mask=FieldMask(paths=["rate_limit"]),
        )
    )
    await enqueue(stub)
    await enqueue(stub)
    await lease_one(stub)  # takes the only token
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w1", queues=[QUEUE], max_jobs=1))
    assert not reply.jobs
    samples = await scrape(coordinator)
    assert value(samples, "conveyor_lease_throttled_total", queue=QUEUE) >= 1


async def test_a_repeated_cancel_is_counted_once(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    job_id = await enqueue(stub)
    await stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    clock.advance(1.0)
    await stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    samples = await scrape(coordinator)
    labels = {"queue": QUEUE, "task_type": TASK}
    assert value(samples, "conveyor_jobs_finished_total", outcome="cancelled", **labels) == 1
