"""The Node SDK's push side: a plain `http` server with pushHandler as a push queue's
function (real coordinator, real time), and verifySignature's verdicts."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from google.protobuf.duration_pb2 import Duration
from node_support import HERE, NodeWorker, SpawnNode, require_node

sys.path.insert(0, str(Path(__file__).parent.parent / "push"))
from push_helpers import enqueue, job_in_state, set_push

require_node()

PUSH_FUNCTION = HERE / "push_function.mjs"


@pytest.fixture
async def live_stub(live_coordinator: Coordinator) -> AsyncIterator[rpc.CoordinatorServiceStub]:
    async with grpc.aio.insecure_channel(live_coordinator.address) as channel:
        yield rpc.CoordinatorServiceStub(channel)


async def test_a_node_push_handler_runs_pushed_jobs(
    live_stub: rpc.CoordinatorServiceStub, spawn_node: SpawnNode
) -> None:
    function = await spawn_node(str(PUSH_FUNCTION), "serve", "k")
    port = (await function.event("ready"))["port"]
    await set_push(live_stub, "fn", f"http://127.0.0.1:{port}/", secret="k")
    job_id = await enqueue(live_stub, "fn", b"ada")
    job = await job_in_state(live_stub, job_id, pb.JOB_STATE_SUCCEEDED)
    assert job.result == b"hello ada"
    refused = await live_stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="fn", task_type="refuse", max_attempts=5))
    )
    failed = await job_in_state(live_stub, refused.job_id, pb.JOB_STATE_FAILED)
    assert failed.attempt == 1 and "never" in failed.last_error.message


async def test_a_node_push_handler_refuses_another_secret(
    live_stub: rpc.CoordinatorServiceStub, spawn_node: SpawnNode
) -> None:
    function = await spawn_node(str(PUSH_FUNCTION), "serve", "k")
    port = (await function.event("ready"))["port"]
    await set_push(live_stub, "fn", f"http://127.0.0.1:{port}/", secret="not-k")
    job_id = await enqueue(live_stub, "fn", b"ada", max_attempts=5)
    job = await job_in_state(live_stub, job_id, pb.JOB_STATE_FAILED)
    assert "HTTP 401" in job.last_error.message


async def test_node_verify_signature_refuses_bad_and_old_signatures(
    spawn_node: SpawnNode,
) -> None:
    verdicts = await (await spawn_node(str(PUSH_FUNCTION), "verify")).event("verified")
    assert verdicts == {
        "event": "verified",
        "good": True,
        "wrongSecret": False,
        "tampered": False,
        "replayedLate": False,
        "missing": False,
        "garbage": False,
    }


async def test_a_node_worker_serves_pushed_and_pulled_jobs_with_one_set_of_handlers(
    live_coordinator: Coordinator, live_stub: rpc.CoordinatorServiceStub, spawn_node: SpawnNode
) -> None:
    """pushHandler(worker): the Worker's own handlers, timeouts and version routing answer
    pushes, while the same Worker pulls another queue."""
    function = await spawn_node(str(PUSH_FUNCTION), "serve-worker", "k", live_coordinator.address)
    port = (await function.event("ready"))["port"]
    await set_push(live_stub, "fn", f"http://127.0.0.1:{port}/", secret="k")

    pushed = await enqueue(live_stub, "fn", b"ada")
    pulled = await live_stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="pull", task_type="hello", payload=b"bob"))
    )
    versioned = await live_stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="fn", task_type="versioned", task_version="1.2.0"))
    )
    slow = await live_stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue="fn", task_type="slow", max_attempts=1))
    )

    assert (await job_in_state(live_stub, pushed, pb.JOB_STATE_SUCCEEDED)).result == b"hello ada"
    pulled_job = await job_in_state(live_stub, pulled.job_id, pb.JOB_STATE_SUCCEEDED)
    assert pulled_job.result == b"hello bob"
    assert pulled_job.attempts[0].worker_id == "node-push-and-pull"
    routed = await job_in_state(live_stub, versioned.job_id, pb.JOB_STATE_SUCCEEDED)
    assert routed.result == b"v1 handler"
    timed_out = await job_in_state(live_stub, slow.job_id, pb.JOB_STATE_FAILED)
    assert "HTTP 500" in timed_out.last_error.message
    assert "HandlerTimeout" in timed_out.last_error.message


@dataclasses.dataclass
class BackgroundPush:
    """A Node push app in background mode behind queue "fn", and a stub of its coordinator."""

    function: NodeWorker
    stub: rpc.CoordinatorServiceStub


@pytest.fixture
async def background_push(
    live_http_coordinator: Coordinator, spawn_node: SpawnNode
) -> AsyncIterator[BackgroundPush]:
    url = f"http://{live_http_coordinator.http_address}"
    function = await spawn_node(str(PUSH_FUNCTION), "serve-background", "k", url)
    port = (await function.event("ready"))["port"]
    async with grpc.aio.insecure_channel(live_http_coordinator.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        await set_push(stub, "fn", f"http://127.0.0.1:{port}/", secret="k")
        yield BackgroundPush(function, stub)


async def _enqueue_retried(stub: rpc.CoordinatorServiceStub, task_type: str, attempts: int) -> str:
    """A job of queue "fn" whose failures are retried after 10 ms."""
    policy = pb.RetryPolicy(initial_backoff=Duration(nanos=10_000_000), jitter=0)
    spec = pb.JobSpec(queue="fn", task_type=task_type, max_attempts=attempts, retry_policy=policy)
    return (await stub.Enqueue(pb.EnqueueRequest(job=spec))).job_id


async def test_node_background_mode_answers_202_and_posts_the_receipt_over_http(
    background_push: BackgroundPush,
) -> None:
    """pushHandler(worker, {background: true, coordinatorUrl}): 202 at once, then the receipt
    over the coordinator's HTTP API; a failure is retried by the job's policy."""
    function, stub = background_push.function, background_push.stub
    job_id = await enqueue(stub, "fn", b"ada")
    assert (await function.event("replied"))["status"] == 202
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED)
    assert job.result == b"hello ada"

    flaky = await _enqueue_retried(stub, "flaky", 3)
    done = await job_in_state(stub, flaky, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.result == b"second time"
    assert [a.outcome for a in done.attempts] == [pb.OUTCOME_FAILURE, pb.OUTCOME_SUCCESS]
    assert done.attempts[0].error.message == "first attempt fails"
    assert [(await function.event("replied"))["status"] for _ in range(2)] == [202, 202]


async def test_node_background_mode_hands_a_later_attempt_the_checkpoint_an_earlier_one_saved(
    background_push: BackgroundPush,
) -> None:
    """The push request carries only the payload: the app asks for the checkpoint with its
    first heartbeat (return_checkpoint) before the handler starts."""
    stub = background_push.stub
    job_id = await _enqueue_retried(stub, "resume", 2)
    job = await job_in_state(stub, job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.result == b"step-1"
