"""The SDK worker against a real coordinator on port 0 (real time; SQLite, and PostgreSQL too
where a test names db_kind)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import conveyor.worker as worker_module
import grpc
import pytest
from conveyor import (
    Client,
    JobContext,
    JobState,
    NonRetryableError,
    Retry,
    RetryPolicy,
    Worker,
    WorkerConfig,
)
from conveyor._heartbeats import Confirmation, Heartbeats
from conveyor.models import Job, Outcome
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.main import Coordinator
from databases import DB_KINDS

StartWorker = Callable[[Worker], "asyncio.Task[None]"]
FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=10), jitter=0.0)


def _worker(coord: Coordinator, **kwargs: object) -> Worker:
    kwargs.setdefault("concurrency", 4)
    kwargs.setdefault("shutdown_grace", 1.0)
    return Worker(coord.address, ["q"], **kwargs)  # type: ignore[arg-type]


async def test_worker_runs_jobs_and_reports_their_results(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("upper")
    async def upper(job: JobContext) -> bytes:
        return job.payload.upper()

    start_worker(worker)
    ids = [(await client.enqueue("q", "upper", f"job-{i}".encode())).job_id for i in range(20)]

    results = [await client.wait_for_result(job_id, timeout=5) for job_id in ids]

    assert results == [f"JOB-{i}".encode() for i in range(20)]


async def test_worker_never_leases_more_than_its_free_slots(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator, concurrency=3)
    release = asyncio.Event()
    running = 0
    most = 0
    three_running = asyncio.Event()

    @worker.task("hold")
    async def hold(job: JobContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1

    for _ in range(8):
        await client.enqueue("q", "hold")
    start_worker(worker)
    await asyncio.wait_for(three_running.wait(), 5)
    await asyncio.sleep(0.1)  # room for a wrong extra Lease to land

    leased = await client.list_jobs("q", JobState.LEASED)
    release.set()
    for job in (await client.list_jobs("q")).jobs:
        await client.wait_job(job.job_id, timeout=5)

    assert len(leased.jobs) == 3
    assert most == 3


async def test_sync_handlers_run_in_worker_threads(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    loop_thread = threading.current_thread()

    @worker.task("where")
    def where(job: JobContext) -> str:
        time.sleep(0.01)  # blocking is fine here
        return threading.current_thread().name

    start_worker(worker)
    job = await client.enqueue("q", "where")

    thread_name = await client.wait_for_result(job.job_id, timeout=5)

    assert thread_name.decode() != loop_thread.name
    assert thread_name.startswith(b"conveyor-handler")


async def test_sync_handlers_run_concurrently_up_to_concurrency(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator, concurrency=8)
    barrier = threading.Barrier(8, timeout=5)

    @worker.task("meet")
    def meet(job: JobContext) -> None:
        barrier.wait()  # only passes if all eight run at once

    ids = [(await client.enqueue("q", "meet")).job_id for _ in range(8)]
    start_worker(worker)

    for job_id in ids:
        assert (await client.wait_job(job_id, timeout=5)).state is JobState.SUCCEEDED


async def test_checkpoint_saved_before_a_failure_reaches_the_next_attempt(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    seen: list[bytes | None] = []

    @worker.task("resume")
    async def resume(job: JobContext) -> bytes:
        seen.append(job.checkpoint)
        if job.attempt == 1:
            job.save_checkpoint(b"step-2")
            raise RuntimeError("crashed after step 1")
        return b"done"

    start_worker(worker)
    job = await client.enqueue("q", "resume", retry_policy=FAST_RETRY)

    assert await client.wait_for_result(job.job_id, timeout=5) == b"done"
    assert seen == [None, b"step-2"]


async def test_checkpoint_travels_with_a_heartbeat_while_the_job_runs(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    finish = asyncio.Event()

    @worker.task("progress")
    async def progress(job: JobContext) -> None:
        job.save_checkpoint(b"half")
        job.heartbeat_now()
        await finish.wait()

    start_worker(worker)
    job = await client.enqueue("q", "progress")
    try:
        # Nothing signals a stored checkpoint: look at the job until it shows.
        for _ in range(250):
            if (await client.get_job(job.job_id)).checkpoint == b"half":
                break
            await asyncio.sleep(0.02)
        stored = (await client.get_job(job.job_id)).checkpoint
    finally:
        finish.set()

    assert stored == b"half"


async def test_retry_after_overrides_the_policy_backoff(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    started: list[float] = []

    @worker.task("flaky")
    async def flaky(job: JobContext) -> None:
        started.append(time.monotonic())
        if job.attempt == 1:
            raise Retry("busy", after=0.3)

    start_worker(worker)
    slow_policy = RetryPolicy(initial_backoff=timedelta(seconds=60))
    job = await client.enqueue("q", "flaky", retry_policy=slow_policy)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state is JobState.SUCCEEDED
    assert 0.3 <= started[1] - started[0] < 5
    assert final.attempts[0].error is not None and final.attempts[0].error.type == "Retry"


async def test_non_retryable_error_fails_the_job_at_once(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("reject")
    async def reject(job: JobContext) -> None:
        raise NonRetryableError("unknown customer")

    start_worker(worker)
    job = await client.enqueue("q", "reject", max_attempts=5, retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state is JobState.FAILED
    assert final.attempt == 1
    assert final.last_error is not None
    assert (final.last_error.type, final.last_error.message) == (
        "NonRetryableError",
        "unknown customer",
    )


async def test_exception_classes_registered_non_retryable_fail_at_once(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("parse", non_retryable=[ValueError])
    async def parse(job: JobContext) -> None:
        int(job.payload)

    start_worker(worker)
    job = await client.enqueue("q", "parse", b"x", max_attempts=5, retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=5)

    assert (final.state, final.attempt) == (JobState.FAILED, 1)


async def test_plain_exceptions_are_retried_until_attempts_run_out(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("broken")
    async def broken(job: JobContext) -> None:
        raise KeyError("nope")

    start_worker(worker)
    job = await client.enqueue("q", "broken", max_attempts=3, retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=5)

    assert (final.state, final.attempt) == (JobState.FAILED, 3)
    assert [a.outcome for a in final.attempts] == [Outcome.FAILURE] * 3
    assert final.last_error is not None and final.last_error.type == "KeyError"


async def test_unknown_task_type_fails_with_a_clear_error(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    # Undeclared: a worker that names its task types in Lease is never given this job.
    worker = _worker(live_coordinator, config=WorkerConfig(declare_task_types=False))
    worker.register("known", lambda job: None)
    start_worker(worker)
    job = await client.enqueue("q", "unknown", max_attempts=1)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state is JobState.FAILED
    assert final.last_error is not None
    assert final.last_error.type == "UnknownTaskType"
    assert "'unknown'" in final.last_error.message


async def test_handler_over_its_timeout_fails_retryably(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("slow", timeout=0.1)
    async def slow(job: JobContext) -> None:
        await asyncio.sleep(10)

    start_worker(worker)
    job = await client.enqueue("q", "slow", max_attempts=2, retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=5)

    assert (final.state, final.attempt) == (JobState.FAILED, 2)
    assert final.last_error is not None and final.last_error.type == "HandlerTimeout"


async def test_oversized_result_fails_the_attempt_instead_of_hanging(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("huge")
    async def huge(job: JobContext) -> bytes:
        return b"x" * (live_coordinator.config.max_payload_bytes + 1)

    start_worker(worker)
    job = await client.enqueue("q", "huge", max_attempts=1)

    final = await client.wait_job(job.job_id, timeout=5)

    assert final.state is JobState.FAILED
    assert final.last_error is not None and final.last_error.type == "InvalidReceipt"


async def test_cancelled_job_cancels_its_async_handler(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    started = asyncio.Event()
    handler_cancelled = asyncio.Event()

    @worker.task("long")
    async def long(job: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise

    start_worker(worker)
    job = await client.enqueue("q", "long", lease_duration=1)  # heartbeats every ~0.33 s
    await asyncio.wait_for(started.wait(), 5)

    await client.cancel_job(job.job_id)

    await asyncio.wait_for(handler_cancelled.wait(), 2)
    final = await client.wait_job(job.job_id, timeout=5)
    assert final.state is JobState.CANCELLED


async def test_cancelled_job_is_seen_by_a_sync_handler(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)
    started = threading.Event()

    @worker.task("poll")
    def poll(job: JobContext) -> None:
        started.set()
        deadline = time.monotonic() + 5
        while not job.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("stopped: cancelled" if job.cancelled else "never cancelled")

    start_worker(worker)
    job = await client.enqueue("q", "poll", lease_duration=1)
    assert await asyncio.to_thread(started.wait, 5)

    await client.cancel_job(job.job_id)

    final = await client.wait_job(job.job_id, timeout=5)
    assert final.state is JobState.CANCELLED
    assert final.last_error is not None and "stopped: cancelled" in final.last_error.message


async def test_heartbeats_keep_a_job_longer_than_its_lease(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator)

    @worker.task("long")
    async def long(job: JobContext) -> bytes:
        await asyncio.sleep(3)
        return b"ok"

    start_worker(worker)
    # A 2 s lease (heartbeats every ~0.67 s), not 1 s: the coordinator and the worker share
    # this process, and on a loaded 2-core machine a garbage-collector pause longer than 2/3 of
    # a 1 s lease (seen: 0.7 s) would let the lease lapse between two heartbeats sent on time.
    job = await client.enqueue("q", "long", lease_duration=2, retry_policy=FAST_RETRY)

    final = await client.wait_job(job.job_id, timeout=8)

    assert (final.state, final.attempt, final.result) == (JobState.SUCCEEDED, 1, b"ok")


async def test_lost_lease_cancels_the_handler_and_sends_no_receipt(
    live_coordinator: Coordinator,
    client: Client,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Heartbeat only after the 1 s lease has run out (1.6 s, or 1.2 s with the early slack),
    # so the coordinator takes the job back first.
    monkeypatch.setattr("conveyor.worker.heartbeat_interval", lambda job, fraction: 1.6)
    worker = _worker(live_coordinator)
    first_cancelled = asyncio.Event()

    @worker.task("stuck")
    async def stuck(job: JobContext) -> bytes:
        if job.attempt > 1:
            return b"second attempt"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            assert job.cancelled
            first_cancelled.set()
            raise
        return b"first attempt"

    start_worker(worker)
    job = await client.enqueue("q", "stuck", lease_duration=1, retry_policy=FAST_RETRY)

    await asyncio.wait_for(first_cancelled.wait(), 3)
    final = await client.wait_job(job.job_id, timeout=5)

    assert (final.state, final.result) == (JobState.SUCCEEDED, b"second attempt")
    # Attempt 1 ended by lease expiry, with no receipt from the worker that lost it.
    assert final.attempts[0].outcome is Outcome.UNSPECIFIED


async def test_stop_lets_running_jobs_finish_within_the_grace_period(
    live_coordinator: Coordinator, client: Client
) -> None:
    worker = _worker(live_coordinator, shutdown_grace=5)
    started = asyncio.Event()

    @worker.task("short")
    async def short(job: JobContext) -> bytes:
        started.set()
        await asyncio.sleep(0.2)
        return b"finished"

    running = asyncio.create_task(worker.run())
    job = await client.enqueue("q", "short")
    await asyncio.wait_for(started.wait(), 5)

    worker.stop()
    await asyncio.wait_for(running, 5)

    final = await client.get_job(job.job_id)
    assert (final.state, final.result) == (JobState.SUCCEEDED, b"finished")


async def test_stop_releases_jobs_unfinished_after_the_grace_period(
    live_coordinator: Coordinator, client: Client
) -> None:
    worker = _worker(live_coordinator, shutdown_grace=0.2)
    started = asyncio.Event()

    @worker.task("endless")
    async def endless(job: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    running = asyncio.create_task(worker.run())
    job = await client.enqueue("q", "endless")
    await asyncio.wait_for(started.wait(), 5)

    worker.stop()
    await asyncio.wait_for(running, 5)

    final = await client.get_job(job.job_id)
    assert final.state is JobState.AVAILABLE
    assert final.attempt == 0  # a release does not count an attempt
    assert final.attempts[-1].outcome is Outcome.RELEASE


async def test_stop_is_safe_to_call_twice(live_coordinator: Coordinator) -> None:
    worker = _worker(live_coordinator)
    worker.register("noop", lambda job: None)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)

    worker.stop()
    worker.stop()

    await asyncio.wait_for(running, 5)
    worker.stop()


async def test_stop_cuts_a_waiting_lease_short(live_coordinator: Coordinator) -> None:
    worker = _worker(live_coordinator)  # long-polls for 20 s when idle
    worker.register("noop", lambda job: None)
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)

    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(running, 5)

    assert time.monotonic() - started < 1


async def test_stop_before_run_makes_run_return_at_once(live_coordinator: Coordinator) -> None:
    worker = _worker(live_coordinator)
    worker.register("noop", lambda job: None)

    worker.stop()

    await asyncio.wait_for(worker.run(), 2)


async def test_sigterm_stops_a_worker_that_installed_signal_handlers(
    live_coordinator: Coordinator,
) -> None:
    worker = _worker(live_coordinator)
    worker.register("noop", lambda job: None)
    running = asyncio.create_task(worker.run(install_signal_handlers=True))
    await asyncio.sleep(0.1)

    os.kill(os.getpid(), signal.SIGTERM)

    await asyncio.wait_for(running, 5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_run_without_handlers_is_refused(live_coordinator: Coordinator) -> None:
    worker = _worker(live_coordinator)

    with pytest.raises(ValueError, match="register"):
        await worker.run()


def test_a_task_type_takes_one_handler() -> None:
    worker = Worker("127.0.0.1:1", ["q"])
    worker.register("t", lambda job: None)

    with pytest.raises(ValueError, match="already"):
        worker.register("t", lambda job: None)


async def _read_while_running(
    worker: Worker, client: Client, start_worker: StartWorker, **enqueue: Any
) -> tuple[str, Job]:
    """Runs one job of an hour's lease in `worker` and reads it while its handler runs; the
    handler then returns."""
    started = asyncio.Event()
    release = asyncio.Event()

    @worker.task("hold")
    async def hold(job: JobContext) -> None:
        started.set()
        await release.wait()

    job_id = (await client.enqueue("q", "hold", lease_duration=3600, **enqueue)).job_id
    start_worker(worker)
    await asyncio.wait_for(started.wait(), 5)
    job = await client.get_job(job_id)
    release.set()
    return job_id, job


async def test_worker_confirms_each_lease_before_its_handler_runs(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    """By default the worker leases with confirmation and confirms at once: by the time a
    handler runs, its job holds its full lease, not the short confirmation window."""
    worker = _worker(live_coordinator, config=WorkerConfig(concurrency=4, confirm_within=1.0))
    job_id, job = await _read_while_running(worker, client, start_worker, max_attempts=1)

    assert job.lease_expires_at is not None
    assert job.lease_expires_at - datetime.now(UTC) > timedelta(minutes=30)
    assert (await client.wait_for_result(job_id, timeout=5)) == b""


async def test_worker_without_confirmation_leases_for_the_full_duration(
    live_coordinator: Coordinator, client: Client, start_worker: StartWorker
) -> None:
    worker = _worker(live_coordinator, config=WorkerConfig(concurrency=4, confirm_leases=False))
    _job_id, job = await _read_while_running(worker, client, start_worker)

    assert job.lease_expires_at is not None
    assert job.lease_expires_at - datetime.now(UTC) > timedelta(minutes=30)


async def test_a_lease_reply_the_worker_never_confirms_comes_back_with_its_attempt_unspent(
    live_coordinator: Coordinator,
    client: Client,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first reply is dropped unconfirmed, as a reply lost on the wire would be: the
    coordinator hands its job back when the 0.5 s window passes, and the worker leases it
    again as its first attempt (max_attempts 1, so an expired lease would have failed it)."""
    dropped: list[str] = []
    real_confirm = Heartbeats.confirm

    async def drop_first(
        self: Heartbeats, jobs: Sequence[pb.LeasedJob], window: float
    ) -> Confirmation:
        if not dropped:
            dropped.extend(job.job_id for job in jobs)
            return Confirmation()
        return await real_confirm(self, jobs, window)

    monkeypatch.setattr(Heartbeats, "confirm", drop_first)
    worker = _worker(live_coordinator, config=WorkerConfig(concurrency=1, confirm_within=0.5))
    attempts: list[int] = []

    @worker.task("once")
    async def once(job: JobContext) -> bytes:
        attempts.append(job.attempt)
        return b"ran"

    job_id = (await client.enqueue("q", "once", max_attempts=1, lease_duration=3600)).job_id
    start_worker(worker)

    assert await client.wait_for_result(job_id, timeout=10) == b"ran"
    assert dropped == [job_id]
    assert attempts == [1]
    assert (await client.get_job(job_id)).attempt == 1


class _CancelBeforeConfirmation(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """On the worker's channel: cancels the jobs of the first HeartbeatBatch just before it
    is sent. That call is the confirmation of the first Lease reply (no job runs yet, so
    there is nothing else to heartbeat): the CancelJob lands after the claim and before the
    confirmation, on the real coordinator, without any timing."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.cancelled: list[str] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/HeartbeatBatch") and not self.cancelled:
            for heartbeat in request.heartbeats:
                await self._client.cancel_job(heartbeat.job_id)
                self.cancelled.append(heartbeat.job_id)
        return await continuation(details, request)


@pytest.mark.parametrize("db_kind", DB_KINDS)
async def test_a_job_cancelled_before_its_lease_is_confirmed_never_starts(
    live_coordinator: Coordinator,
    client: Client,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = _CancelBeforeConfirmation(client)

    def channel_with_hook(address: str, *args: object, **kwargs: object) -> grpc.aio.Channel:
        interceptors: Any = [hook]  # grpc's stubs type the list narrower than it is
        return grpc.aio.insecure_channel(address, interceptors=interceptors)

    monkeypatch.setattr(worker_module, "open_channel", channel_with_hook)
    worker = _worker(live_coordinator, config=WorkerConfig(concurrency=1))
    calls: list[str] = []

    @worker.task("never")
    async def never(job: JobContext) -> bytes:
        calls.append(job.job_id)
        return b"ran"

    job_id = (await client.enqueue("q", "never", lease_duration=3600)).job_id
    start_worker(worker)

    final = await client.wait_job(job_id, timeout=10)
    assert hook.cancelled == [job_id]
    assert calls == []
    assert final.state is JobState.CANCELLED
