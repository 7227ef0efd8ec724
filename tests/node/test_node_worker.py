"""The Node SDK (sdk/node) against a real coordinator on port 0: a real `node` process runs
tests/node/worker_script.mjs, and the test side steers and inspects jobs with the Python
Client."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import timedelta

from conveyor import Client, JobState, RetryPolicy
from conveyor.models import Outcome
from conveyor_server.main import Coordinator
from node_support import CLIENT_SCRIPT, StartNodeWorker, require_node

require_node()

FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=10), jitter=0.0)


async def test_worker_runs_jobs_and_reports_their_results(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    worker = await start_node_worker()
    ids = [(await client.enqueue("q", "echo", f"job-{i}".encode())).job_id for i in range(10)]

    results = [await client.wait_for_result(job_id, timeout=5) for job_id in ids]
    stopped, code = await worker.stop()

    assert results == [f"job-{i}".encode() for i in range(10)]
    assert stopped["processed"] == 10
    assert code == 0


async def test_worker_never_runs_more_than_its_concurrency(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    ids = [(await client.enqueue("q", "hold", b"300")).job_id for _ in range(9)]
    worker = await start_node_worker(concurrency=3)
    leased = []
    for _ in range(500):  # until the first three run: the worker starts late on a busy machine
        leased.append(len((await client.list_jobs("q", JobState.LEASED)).jobs))
        if leased[-1] >= 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)  # a wrong extra Lease would show now
    leased.append(len((await client.list_jobs("q", JobState.LEASED)).jobs))

    for job_id in ids:
        await client.wait_for_result(job_id, timeout=5)
    stopped, _ = await worker.stop()

    assert max(leased) == 3
    assert stopped["maxRunning"] == 3


async def test_retryable_failure_is_retried_and_then_succeeds(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    job = await client.enqueue("q", "flaky", retry_policy=FAST_RETRY)

    result = await client.wait_for_result(job.job_id, timeout=5)
    final = await client.get_job(job.job_id)

    assert result == b"ok on attempt 2"
    assert final.attempt == 2
    first_error = final.attempts[0].error
    assert first_error is not None
    assert (first_error.type, first_error.message) == ("TypeError", "first attempt fails")
    assert not first_error.non_retryable


async def test_non_retryable_error_fails_the_job_at_once(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    job = await client.enqueue("q", "fatal", retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state == JobState.FAILED
    assert final.attempt == 1
    assert final.last_error is not None
    assert final.last_error.type == "NonRetryableError"
    assert final.last_error.message == "card declined"
    assert final.last_error.non_retryable


async def test_retry_reschedules_after_its_delay_instead_of_the_backoff(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    # The policy alone would wait a minute: only Retry(500) brings attempt 2 this soon.
    slow_policy = RetryPolicy(initial_backoff=timedelta(seconds=60), jitter=0.0)
    job = await client.enqueue("q", "later", b"500", retry_policy=slow_policy)

    result = await client.wait_for_result(job.job_id, timeout=5)
    first, second = (await client.get_job(job.job_id)).attempts

    assert result == b"retried"
    assert first.error is not None and first.error.type == "Retry"
    assert first.finished_at is not None and second.started_at is not None
    assert second.started_at - first.finished_at >= timedelta(milliseconds=450)


async def test_checkpoint_saved_before_a_failure_reaches_the_next_attempt(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    job = await client.enqueue("q", "checkpoint", retry_policy=FAST_RETRY)

    result = await client.wait_for_result(job.job_id, timeout=5)

    assert result == b"resumed from step-1"


async def test_heartbeats_keep_a_job_alive_past_its_lease(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    # One attempt only: had the lease lapsed, the job would be FAILED, not finished. The
    # handler runs two whole leases, so only heartbeats (every third of the lease) keep it. A
    # 2 s lease, not 1 s: the coordinator runs in this test process, and on a loaded 2-core
    # machine a garbage-collector pause there longer than 2/3 of a 1 s lease (seen: 0.7 s)
    # would refuse a heartbeat that the worker sent on time.
    job = await client.enqueue("q", "long", b"4000", lease_duration=2, max_attempts=1)

    result = await client.wait_for_result(job.job_id, timeout=10)
    final = await client.get_job(job.job_id)

    assert result == b"finished"
    assert final.attempt == 1


async def test_timeout_fails_the_attempt_and_aborts_the_handler(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    job = await client.enqueue("q", "slow", b"5000", max_attempts=1)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state == JobState.FAILED
    assert final.last_error is not None
    assert final.last_error.type == "HandlerTimeout"
    assert not final.last_error.non_retryable


async def test_lost_lease_aborts_the_handler_and_sends_no_receipt(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    worker = await start_node_worker()
    job = await client.enqueue("q", "until_aborted", lease_duration=1, retry_policy=FAST_RETRY)
    await worker.event("started")

    # Freeze the worker past its 1 s lease: the coordinator takes the job back, and the
    # heartbeat sent on waking is refused.
    worker.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep(2.0)
    worker.process.send_signal(signal.SIGCONT)
    aborted = await worker.event("aborted")
    final = await client.wait_job(job.job_id, timeout=5)

    assert aborted["reason"] == "lease_lost"
    # Usually attempt 2 succeeds; but the frozen worker's long-poll may take the job while it
    # is stopped and never confirm that lease (the worker leases with confirmation), which the
    # coordinator then hands back itself, recorded as a RELEASE. Either way the attempt that
    # succeeded is the last one, and the first, lost attempt ended by expiry with no receipt.
    assert final.state is JobState.SUCCEEDED and final.attempt >= 2
    assert final.result == f"attempt {final.attempt}".encode()
    assert final.attempts[0].outcome is Outcome.UNSPECIFIED
    assert {a.outcome for a in final.attempts[1:-1]} <= {Outcome.UNSPECIFIED, Outcome.RELEASE}


async def test_cancel_job_aborts_the_handlers_signal(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    worker = await start_node_worker()
    # A 1 s lease: heartbeats (which carry the cancellation) every third of a second.
    job = await client.enqueue("q", "until_aborted", lease_duration=1)
    await worker.event("started")

    await client.cancel_job(job.job_id)
    aborted = await worker.event("aborted")
    final = await client.wait_job(job.job_id, timeout=5)

    assert aborted == {
        "event": "aborted",
        "jobId": job.job_id,
        "cancelled": True,
        "reason": "cancel_requested",
    }
    assert final.state == JobState.CANCELLED


async def test_sigterm_finishes_short_jobs_and_releases_the_rest(
    client: Client, start_node_worker: StartNodeWorker
) -> None:
    worker = await start_node_worker(shutdown_grace_ms=800)
    stuck = await client.enqueue("q", "until_aborted")
    await worker.event("started")
    short = await client.enqueue("q", "hold", b"300")
    await asyncio.sleep(0.1)  # both are running

    began = time.monotonic()
    worker.terminate()
    aborted = await worker.event("aborted")
    stopped, code = await worker.stopped()
    waited = time.monotonic() - began

    assert aborted["reason"] == "shutdown"
    assert code == 0
    assert waited >= 0.7  # the grace period was granted
    assert (await client.get_job(short.job_id)).state == JobState.SUCCEEDED
    released = await client.get_job(stuck.job_id)
    assert released.state == JobState.AVAILABLE
    assert released.attempt == 0  # a release does not count an attempt
    assert stopped["processed"] == 1


async def test_node_client_enqueues_waits_and_reports_status_names(
    live_coordinator: Coordinator, start_node_worker: StartNodeWorker
) -> None:
    await start_node_worker()
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT_SCRIPT),
        live_coordinator.address,
        "hello from node",
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(15):
        stdout, _ = await process.communicate()

    assert process.returncode == 0
    output = json.loads(stdout)
    assert output["state"] == "JOB_STATE_SUCCEEDED"
    assert output["result"] == "hello from node"
    assert output["maxAttempts"] == 3
    assert output["missing"] == "NOT_FOUND"
