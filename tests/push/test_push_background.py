"""The push app's "202 now, receipt later" mode (issue 12): a real coordinator with its HTTP
API on, the app served by a real uvicorn; the handler runs on after the 202 while the app
heartbeats the lease and then posts the receipt over the HTTP API."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

import grpc
import httpx
import pytest
from conveyor import JobContext, Worker
from conveyor.push import PushApp, asgi_app, sign
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from conveyor_server.observability.http import HttpServer
from google.protobuf.duration_pb2 import Duration
from push_helpers import job_in_state, job_where, set_push

SECRET = "k"


@dataclasses.dataclass
class Function:
    """The app under test, its URL, the statuses it answered, and gates its handlers wait on."""

    app: PushApp
    url: str
    statuses: list[int]
    gates: dict[str, asyncio.Event]


@pytest.fixture
async def stub(live_http_coordinator: Coordinator) -> AsyncIterator[rpc.CoordinatorServiceStub]:
    async with grpc.aio.insecure_channel(live_http_coordinator.address) as channel:
        yield rpc.CoordinatorServiceStub(channel)


def long_worker(stub: rpc.CoordinatorServiceStub, gates: dict[str, asyncio.Event]) -> Worker:
    # Never run: its handlers serve the push app. No grace: closing the app hands jobs back.
    worker = Worker("127.0.0.1:1", ["fn"], shutdown_grace=0)

    @worker.task("gated")
    async def gated(job: JobContext) -> bytes:
        await gates.setdefault(job.job_id, asyncio.Event()).wait()
        return b"done " + job.payload

    @worker.task("flaky")
    async def flaky(job: JobContext) -> bytes:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return b"second time"

    @worker.task("resume")
    async def resume(job: JobContext) -> bytes:
        """Attempt 1 saves progress and fails; a later one answers with what it was handed."""
        if job.attempt == 1:
            job.save_checkpoint(b"step-1")
            raise RuntimeError("first attempt fails after step 1")
        return job.checkpoint or b"no checkpoint"

    @worker.task("outlive")
    async def outlive(job: JobContext) -> bytes:
        """Runs past the lease it was pushed with; only heartbeats keep the job its own."""
        first = (await stub.GetJob(pb.GetJobRequest(job_id=job.job_id))).lease_expires_at
        original = first.ToMicroseconds() / 1e6
        # The work itself: a second past the deadline the job was pushed with.
        await asyncio.sleep(original + 1 - time.time())
        return b"outlived"

    return worker


@pytest.fixture
async def function(
    live_http_coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> AsyncIterator[Function]:
    gates: dict[str, asyncio.Event] = {}
    app = asgi_app(
        long_worker(stub, gates),
        secret=SECRET,
        background=True,
        coordinator_url=f"http://{live_http_coordinator.http_address}",
    )
    statuses: list[int] = []

    async def recording(scope, receive, send):  # type: ignore[no-untyped-def]
        async def sending(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        await app(scope, receive, sending)

    server = HttpServer(recording, "127.0.0.1:0", "function")
    await server.start()
    try:
        yield Function(app, f"http://{server.address}/", statuses, gates)
    finally:
        for gate in gates.values():
            gate.set()
        await app.aclose()
        await server.stop()


async def enqueue(stub: rpc.CoordinatorServiceStub, task_type: str, **spec: object) -> str:
    job = pb.JobSpec(queue="fn", task_type=task_type, payload=b"ada", **spec)  # type: ignore[arg-type]
    return (await stub.Enqueue(pb.EnqueueRequest(job=job))).job_id


async def test_202_then_a_receipt_succeeds_the_job(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    await set_push(stub, "fn", function.url, secret=SECRET)
    job_id = await enqueue(stub, "gated")
    await wait_for(lambda: function.statuses == [202])  # while the handler still waits
    running = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert running.state == pb.JOB_STATE_LEASED
    function.gates.setdefault(job_id, asyncio.Event()).set()
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED)
    assert job.result == b"done ada" and job.attempt == 1 == running.attempt
    # The app counts the receipt when the coordinator's reply reaches it, which may be just
    # after GetJob already shows the job SUCCEEDED.
    await wait_for(lambda: function.app.receipts_sent == 1)


async def test_a_handler_outliving_its_lease_keeps_it_by_heartbeats(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    await set_push(stub, "fn", function.url, secret=SECRET, timeout_seconds=1)
    job_id = await enqueue(stub, "outlive", max_attempts=1, lease_duration=Duration(seconds=2))
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.result == b"outlived"
    assert [attempt.attempt for attempt in job.attempts] == [1]
    assert function.statuses == [202]


async def test_a_failure_is_retried_by_the_jobs_policy(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    await set_push(stub, "fn", function.url, secret=SECRET)
    policy = pb.RetryPolicy(initial_backoff=Duration(nanos=10_000_000), jitter=0)
    job_id = await enqueue(stub, "flaky", max_attempts=3, retry_policy=policy)
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.result == b"second time"
    assert [a.outcome for a in job.attempts] == [pb.OUTCOME_FAILURE, pb.OUTCOME_SUCCESS]
    assert job.attempts[0].error.message == "first attempt fails"
    assert function.statuses == [202, 202]


async def test_a_later_attempt_is_handed_the_checkpoint_an_earlier_one_saved(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    """The push request carries only the payload: the app asks for the checkpoint with its
    first heartbeat (return_checkpoint) before the handler starts."""
    await set_push(stub, "fn", function.url, secret=SECRET)
    policy = pb.RetryPolicy(initial_backoff=Duration(nanos=10_000_000), jitter=0)
    job_id = await enqueue(stub, "resume", max_attempts=2, retry_policy=policy)
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert job.result == b"step-1"


async def test_cancelling_a_background_job_stops_its_handler(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    """The next heartbeat's reply says the job was cancelled: the handler is cancelled and
    the job ends CANCELLED, as with a pull worker."""
    # A short lease, so that the first heartbeat comes soon (a third of it: 2 s).
    await set_push(stub, "fn", function.url, secret=SECRET, timeout_seconds=1)
    job_id = await enqueue(stub, "gated", lease_duration=Duration(seconds=1))
    await wait_for(lambda: function.statuses == [202])
    await stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    job = await job_in_state(stub, job_id, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_SUCCEEDED)
    assert job.state == pb.JOB_STATE_CANCELLED
    assert not function.gates[job_id].is_set()  # the handler ran, and the cancel ended it


async def test_a_receipt_after_the_lease_ended_is_refused(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    """The test leases the job itself and pushes it to the app by hand; the lease then ends
    (handed back) and is taken again before the handler finishes: the app's late receipt is
    fenced off and the new holder's stands."""
    job_id = await enqueue(stub, "gated", lease_duration=Duration(seconds=300))
    first = await lease(stub)
    assert (await push_by_hand(function, first)).status_code == 202
    await stub.Receipt(receipt(first, pb.OUTCOME_RELEASE))
    second = await lease(stub)
    function.gates.setdefault(job_id, asyncio.Event()).set()
    await wait_for(lambda: function.app.receipts_refused == 1)
    await stub.Receipt(receipt(second, pb.OUTCOME_SUCCESS, result=b"from the new holder"))
    job = await job_where(stub, job_id, lambda j: j.state == pb.JOB_STATE_SUCCEEDED)
    assert job.result == b"from the new holder"
    assert function.app.receipts_sent == 0


async def test_closing_the_app_hands_its_running_jobs_back(
    stub: rpc.CoordinatorServiceStub, function: Function
) -> None:
    """aclose() (the lifespan shutdown) stops what runs past the grace period and releases
    it (no attempt used up); a push that comes after is refused as retryable."""
    job_id = await enqueue(stub, "gated", max_attempts=1, lease_duration=Duration(seconds=300))
    first = await lease(stub)
    assert (await push_by_hand(function, first)).status_code == 202
    await function.app.aclose()
    await job_where(stub, job_id, lambda j: j.state == pb.JOB_STATE_AVAILABLE)
    assert function.app.receipts_sent == 1
    again = await lease(stub)
    assert again.attempt == 1  # the released run did not count
    assert (await push_by_hand(function, again)).status_code == 503


async def push_by_hand(function: Function, job: pb.LeasedJob) -> httpx.Response:
    """POSTs a job the test leased itself to the app, as the pusher would."""
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
    headers = {
        "Conveyor-Job-Id": job.job_id,
        "Conveyor-Lease-Token": job.lease_token,
        "Conveyor-Deadline": deadline,
        "Conveyor-Task-Type": job.task_type,
        "Conveyor-Queue": job.queue,
        "Conveyor-Attempt": str(job.attempt),
        "Conveyor-Signature": sign(SECRET, int(time.time()), job.payload),
    }
    async with httpx.AsyncClient() as client:
        return await client.post(function.url, content=job.payload, headers=headers)


async def lease(stub: rpc.CoordinatorServiceStub) -> pb.LeasedJob:
    reply = await stub.Lease(
        pb.LeaseRequest(worker_id="test", queues=["fn"], max_jobs=1, wait=Duration(seconds=10))
    )
    [job] = reply.jobs
    return job


def receipt(job: pb.LeasedJob, outcome: pb.Outcome.ValueType, **fields: bytes) -> pb.ReceiptRequest:
    return pb.ReceiptRequest(
        job_id=job.job_id, lease_token=job.lease_token, outcome=outcome, **fields
    )


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def test_background_mode_needs_the_coordinators_http_address() -> None:
    with pytest.raises(ValueError, match="coordinator_url"):
        asgi_app(Worker("127.0.0.1:1", ["fn"]), secret=None, background=True)
    with pytest.raises(ValueError, match="http"):
        asgi_app(
            Worker("127.0.0.1:1", ["fn"]),
            secret=None,
            background=["x"],
            coordinator_url="127.0.0.1:8081",
        )
