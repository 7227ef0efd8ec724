"""Push on real time: a Worker's handlers served as an ASGI app (uvicorn, real HTTP) for a
push queue of a real coordinator (signatures carry wall-clock seconds), and a throttled push
queue holding its rate by the coordinator's own lease times."""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from conveyor import JobContext, NonRetryableError, Worker
from conveyor.push import asgi_app, sign
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from conveyor_server.observability.http import HttpServer
from function_server import FunctionServer, Reply, Request
from push_helpers import enqueue, job_in_state, set_push

S = 1_000_000


def greeting_worker(address: str) -> Worker:
    worker = Worker(address, ["fn"])

    @worker.task("hello")
    async def hello(job: JobContext) -> bytes:
        return b"hello " + job.payload

    @worker.task("refuse")
    def refuse(_job: JobContext) -> bytes:
        raise NonRetryableError("never")

    return worker


@pytest.fixture
async def live_stub(live_coordinator: Coordinator) -> AsyncIterator[rpc.CoordinatorServiceStub]:
    async with grpc.aio.insecure_channel(live_coordinator.address) as channel:
        yield rpc.CoordinatorServiceStub(channel)


@pytest.fixture
async def function_url(live_coordinator: Coordinator) -> AsyncIterator[str]:
    app = asgi_app(greeting_worker(live_coordinator.address), secret="k")
    server = HttpServer(app, "127.0.0.1:0", "function")  # type: ignore[arg-type]
    await server.start()
    try:
        yield f"http://{server.address}/"
    finally:
        await server.stop()


async def test_a_worker_handler_runs_behind_a_url(
    live_stub: rpc.CoordinatorServiceStub, function_url: str
) -> None:
    await set_push(live_stub, "fn", function_url, secret="k")
    job_id = await enqueue(live_stub, "fn", b"ada")
    job = await job_in_state(live_stub, job_id, pb.JOB_STATE_SUCCEEDED)
    assert job.result == b"hello ada"


async def test_a_non_retryable_handler_error_dead_letters_the_pushed_job(
    live_stub: rpc.CoordinatorServiceStub, function_url: str
) -> None:
    await set_push(live_stub, "fn", function_url, secret="k")
    reply = await live_stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="fn", task_type="refuse", max_attempts=5))
    )
    job = await job_in_state(live_stub, reply.job_id, pb.JOB_STATE_FAILED)
    assert job.attempt == 1 and "never" in job.last_error.message


async def test_a_push_signed_with_another_secret_is_refused(
    live_stub: rpc.CoordinatorServiceStub, function_url: str
) -> None:
    await set_push(live_stub, "fn", function_url, secret="not-k")
    job_id = await enqueue(live_stub, "fn", b"ada", max_attempts=5)
    job = await job_in_state(live_stub, job_id, pb.JOB_STATE_FAILED)
    assert "HTTP 401" in job.last_error.message


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "t=1,v1=00",
        sign("k", int(time.time()) - 301, b"ada"),  # replayed: older than five minutes
        sign("other", int(time.time()), b"ada"),
    ],
    # Named, not shown: the signatures hold the time of collection, which differs between
    # xdist workers, and every worker must collect the same test ids.
    ids=["absent", "malformed", "replayed", "wrong-secret"],
)
async def test_the_asgi_app_refuses_a_bad_or_old_signature(signature: str | None) -> None:
    app = asgi_app(greeting_worker("127.0.0.1:1"), secret="k")
    headers = {"Conveyor-Task-Type": "hello"}
    if signature is not None:
        headers["Conveyor-Signature"] = signature
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://fn"
    ) as client:
        reply = await client.post("/", content=b"ada", headers=headers)
        fresh = sign("k", int(time.time()), b"ada")
        good = await client.post(
            "/", content=b"ada", headers={**headers, "Conveyor-Signature": fresh}
        )
    assert reply.status_code == 401
    assert good.status_code == 200 and good.content == b"hello ada"


async def test_a_throttled_push_queue_holds_its_rate(
    live_stub: rpc.CoordinatorServiceStub,
) -> None:
    """No more than rate + burst jobs leased in any one-second window, by the coordinator's
    own lease times (attempts[].started_at), however fast the function answers."""
    rate, burst, count = 20.0, 3, 46

    async def respond(_request: Request) -> Reply:
        return Reply(200, b"ok")

    async with FunctionServer(respond) as function:
        await set_push(
            live_stub,
            "fn",
            function.url,
            extra=pb.Queue(rate_limit=pb.RateLimit(rate=rate, burst=burst)),
            paths=("rate_limit",),
        )
        job_ids = [await enqueue(live_stub, "fn") for _ in range(count)]
        jobs = [await job_in_state(live_stub, j, pb.JOB_STATE_SUCCEEDED) for j in job_ids]
    started = sorted(
        job.attempts[0].started_at.seconds * S + job.attempts[0].started_at.nanos // 1000
        for job in jobs
    )
    for i, first in enumerate(started):
        in_window = bisect.bisect_left(started, first + S) - i
        assert in_window <= rate + burst
    # The bucket's promise from below as well: the jobs past the burst waited for tokens.
    assert started[-1] - started[0] >= (count - burst - 1) / rate * S
