"""Push queues against a real coordinator (fake clock) and a real local HTTP server standing
in for a cloud function: how each kind of reply settles the job, and fencing of late answers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conveyor.push import verify_signature
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from function_server import FunctionServer, Reply, Request
from google.protobuf.duration_pb2 import Duration
from push_helpers import enqueue, job_in_state, job_where, set_push

S = 1_000_000
SUCCEEDED, FAILED = pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED
SCHEDULED = pb.JOB_STATE_SCHEDULED


def replies(*scripted: Reply) -> FunctionServer:
    """A function answering with `scripted` in order, then repeating the last one."""
    queue = list(scripted)

    async def respond(_request: Request) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return FunctionServer(respond)


async def test_success_posts_the_payload_and_keeps_the_reply_as_result(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    async with replies(Reply(200, b"done")) as function:
        await set_push(stub, "fn", function.url, secret="s3cret")
        job_id = await enqueue(stub, "fn", b'{"to":"ada"}')
        job = await job_in_state(stub, job_id, SUCCEEDED)
    assert job.result == b"done"
    (request,) = function.requests
    assert request.method == "POST" and request.body == b'{"to":"ada"}'
    assert request.headers["conveyor-job-id"] == job_id
    assert request.headers["conveyor-attempt"] == "1"
    assert request.headers["conveyor-lease-token"]
    assert request.headers["conveyor-deadline"].endswith("Z")
    assert request.headers["conveyor-task-type"] == "hello"
    assert verify_signature(
        "s3cret", request.headers["conveyor-signature"], request.body, now=clock.now() / S
    )


async def test_get_queue_shows_the_target_but_never_the_secret(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_push(stub, "fn", "https://example.invalid/run", secret="s3cret")
    queue = await stub.GetQueue(pb.GetQueueRequest(name="fn"))
    assert queue.push.url == "https://example.invalid/run"
    assert queue.push.signing_secret == ""
    assert queue.push.signing_secret_set
    assert queue.push.max_concurrency == 10  # the default


async def test_writing_back_a_read_target_keeps_the_secret(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await set_push(stub, "fn", "https://example.invalid/run", secret="s3cret")
    queue = await stub.GetQueue(pb.GetQueueRequest(name="fn"))
    queue.push.timeout.CopyFrom(Duration(seconds=60))
    await stub.UpdateQueue(pb.UpdateQueueRequest(queue=queue))
    again = await stub.GetQueue(pb.GetQueueRequest(name="fn"))
    assert again.push.signing_secret_set and again.push.timeout.seconds == 60


@pytest.mark.parametrize(
    ("target", "complaint"),
    [
        (pb.PushTarget(url="ftp://example.invalid/x"), "queue.push.url"),
        (pb.PushTarget(url="https://" + "a" * 2050), "queue.push.url"),
        (pb.PushTarget(url="https://x.invalid", timeout=Duration(seconds=901)), "timeout"),
        (pb.PushTarget(url="https://x.invalid", max_concurrency=1001), "max_concurrency"),
        (pb.PushTarget(url="https://x.invalid", signing_secret="s" * 257), "signing_secret"),
        (pb.PushTarget(url="https://x.invalid", headers={"Conveyor-Job-Id": "x"}), "Conveyor"),
        (pb.PushTarget(url="https://x.invalid", headers={"Connection": "close"}), "hop-by-hop"),
        (
            pb.PushTarget(url="https://x.invalid", headers={f"h{i}": "v" for i in range(51)}),
            "headers",
        ),
    ],
)
async def test_an_invalid_push_target_is_refused(
    stub: rpc.CoordinatorServiceStub, target: pb.PushTarget, complaint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateQueue(pb.UpdateQueueRequest(queue=pb.Queue(name="fn", push=target)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (caught.value.details() or "")


async def test_server_errors_are_retried_until_success(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    async with replies(Reply(500, b"boom"), Reply(503), Reply(200, b"ok")) as function:
        await set_push(stub, "fn", function.url)
        job_id = await enqueue(stub, "fn", max_attempts=5)
        for attempt in (1, 2):
            job = await job_in_state(stub, job_id, SCHEDULED)
            assert job.attempt == attempt and not job.last_error.non_retryable
            clock.advance(3600)
            await coordinator.waker.run_once(clock.now())
        job = await job_in_state(stub, job_id, SUCCEEDED)
    assert job.result == b"ok" and len(function.requests) == 3


async def test_a_client_error_dead_letters_without_retry(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    async with replies(Reply(400, b"bad input")) as function:
        await set_push(stub, "fn", function.url)
        job_id = await enqueue(stub, "fn", max_attempts=5)
        job = await job_in_state(stub, job_id, FAILED)
    assert job.last_error.non_retryable and "HTTP 400" in job.last_error.message
    assert len(function.requests) == 1


async def test_too_many_requests_is_retried_after_retry_after(
    stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    async with replies(Reply(429, headers={"Retry-After": "120"})) as function:
        await set_push(stub, "fn", function.url)
        job_id = await enqueue(stub, "fn", max_attempts=5)
        job = await job_in_state(stub, job_id, SCHEDULED)
    run_at = job.run_at.seconds * S + job.run_at.nanos // 1000
    assert run_at == clock.now() + 120 * S
    assert not job.last_error.non_retryable
    assert len(function.requests) == 1


async def test_accepted_then_the_function_sends_its_receipt(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    async with replies(Reply(202)) as function:
        await set_push(stub, "fn", function.url)
        job_id = await enqueue(stub, "fn")
        request = await function.next_request()
        leased = await job_in_state(stub, job_id, pb.JOB_STATE_LEASED)
        await stub.Receipt(
            pb.ReceiptRequest(
                job_id=job_id,
                lease_token=request.headers["conveyor-lease-token"],
                outcome=pb.OUTCOME_SUCCESS,
                result=b"later",
            )
        )
        job = await job_in_state(stub, job_id, SUCCEEDED)
    assert leased.leased_by.startswith("push:")
    assert job.result == b"later"


async def test_a_receipt_after_the_lease_ended_is_refused(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    async with replies(Reply(202)) as function:
        await set_push(stub, "fn", function.url, timeout_seconds=5)
        job_id = await enqueue(stub, "fn", max_attempts=1)
        request = await function.next_request()
        await job_in_state(stub, job_id, pb.JOB_STATE_LEASED)
        clock.advance(3600)
        await coordinator.reaper.run_once(clock.now())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Receipt(
                pb.ReceiptRequest(
                    job_id=job_id,
                    lease_token=request.headers["conveyor-lease-token"],
                    outcome=pb.OUTCOME_SUCCESS,
                )
            )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert job.state == FAILED


async def test_a_reply_after_the_lease_ended_is_refused_and_the_job_retried(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, clock: FakeClock
) -> None:
    release_first = asyncio.Event()
    first_answered = asyncio.Event()

    async def respond(request: Request) -> Reply:
        if request.headers["conveyor-attempt"] == "1":
            await release_first.wait()
            first_answered.set()
            return Reply(200, b"late")
        return Reply(200, b"fresh")

    async with FunctionServer(respond) as function:
        await set_push(stub, "fn", function.url, timeout_seconds=5)
        job_id = await enqueue(stub, "fn", max_attempts=3)
        await function.next_request()
        clock.advance(3600)  # the lease (30 s) ends while the function still works
        await coordinator.reaper.run_once(clock.now())
        # The first attempt ended by expiry; its backoff (from the lease's start) has passed,
        # so the pusher leases the retry at once.
        await job_where(stub, job_id, lambda job: job.attempts[0].HasField("finished_at"))
        release_first.set()
        await first_answered.wait()
        job = await job_in_state(stub, job_id, SUCCEEDED)
    assert job.result == b"fresh"
    assert [a.outcome for a in job.attempts] == [pb.OUTCOME_UNSPECIFIED, pb.OUTCOME_SUCCESS]


async def test_a_too_large_reply_fails_the_job_saying_why(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    too_large = b"x" * (coordinator.config.max_payload_bytes + 1)
    async with replies(Reply(200, too_large)) as function:
        await set_push(stub, "fn", function.url)
        job_id = await enqueue(stub, "fn", max_attempts=5)
        job = await job_in_state(stub, job_id, FAILED)
    assert "may be at most" in job.last_error.message


async def test_in_flight_requests_stay_within_max_concurrency(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    gate = asyncio.Event()

    async def respond(_request: Request) -> Reply:
        await gate.wait()
        return Reply(200, b"ok")

    async with FunctionServer(respond) as function:
        await set_push(stub, "fn", function.url, max_concurrency=2)
        job_ids = [await enqueue(stub, "fn") for _ in range(5)]
        await function.next_request()
        await function.next_request()
        queue = await stub.GetQueue(pb.GetQueueRequest(name="fn"))
        assert queue.stats.leased == 2 and function.arrivals.empty()
        gate.set()
        for job_id in job_ids:
            await job_in_state(stub, job_id, SUCCEEDED)
    assert len(function.requests) == 5
