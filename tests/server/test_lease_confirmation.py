"""Lease confirmation (LeaseRequest.confirm): a lease whose reply never reached a worker that
confirms it goes back to AVAILABLE when its short window passes, without costing an attempt,
so a Lease cancelled after its reply was written strands nothing (issue 8, item 1)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.api.servicer import CoordinatorServicer
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import QUEUE, WORKER, S, Wire, micros, refused, seconds


def confirm_lease(
    queue: str = QUEUE,
    max_jobs: int = 1,
    confirm_within: float | None = 5.0,
    worker_id: str = WORKER,
) -> pb.LeaseRequest:
    request = pb.LeaseRequest(worker_id=worker_id, queues=[queue], max_jobs=max_jobs, confirm=True)
    if confirm_within is not None:
        request.confirm_within.CopyFrom(seconds(confirm_within))
    return request


async def lease_confirmed_one(wire: Wire, **request: object) -> pb.LeasedJob:
    reply = await wire.stub.Lease(confirm_lease(**request))  # type: ignore[arg-type]
    [job] = reply.jobs
    return job


async def test_an_unconfirmed_lease_goes_back_to_available_without_costing_its_attempt(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    leased = await lease_confirmed_one(wire, confirm_within=5.0)
    assert micros(leased.lease_expires_at) == clock.now() + 5 * S
    assert leased.attempt == 1
    clock.advance(5)
    await coordinator.reaper.run_once(clock.now())

    job = await wire.get(leased.job_id)
    assert (job.state, job.attempt) == (pb.JOB_STATE_AVAILABLE, 0)
    assert not job.HasField("last_error")
    assert micros(job.run_at) == clock.now()  # no backoff
    # The lost lease is fenced off; the job is leased again as its first attempt.
    await refused(wire.heartbeat(leased), grpc.StatusCode.FAILED_PRECONDITION)
    again = await wire.lease_one()
    assert (again.job_id, again.attempt) == (leased.job_id, 1)


async def test_a_heartbeat_confirms_the_lease_and_the_full_lease_holds(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    leased = await lease_confirmed_one(wire, confirm_within=5.0)
    clock.advance(1)
    reply = await wire.heartbeat(leased)
    assert micros(reply.lease_expires_at) == clock.now() + 30 * S
    clock.advance(20)  # far past the window, inside the confirmed lease
    await coordinator.reaper.run_once(clock.now())
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED

    assert (await wire.succeed(leased)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_heartbeat_batch_confirms_each_lease_in_it(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    for _ in range(3):
        await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    reply = await wire.stub.Lease(confirm_lease(max_jobs=3, confirm_within=2.0))
    assert len(reply.jobs) == 3
    confirmed = await wire.stub.HeartbeatBatch(
        pb.HeartbeatBatchRequest(
            heartbeats=[
                pb.HeartbeatRequest(job_id=j.job_id, lease_token=j.lease_token) for j in reply.jobs
            ]
        )
    )
    assert [r.code for r in confirmed.results] == [0, 0, 0]
    clock.advance(10)
    await coordinator.reaper.run_once(clock.now())
    jobs = await wire.jobs(QUEUE)
    assert {(j.state, j.attempt) for j in jobs} == {(pb.JOB_STATE_LEASED, 1)}


async def test_a_receipt_on_an_unconfirmed_lease_is_applied(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    leased = await lease_confirmed_one(wire)
    clock.advance(1)
    assert (await wire.succeed(leased, b"done")).state == pb.JOB_STATE_SUCCEEDED
    clock.advance(60)
    await coordinator.reaper.run_once(clock.now())
    job = await wire.get(leased.job_id)
    assert (job.state, job.attempt, job.result) == (pb.JOB_STATE_SUCCEEDED, 1, b"done")


async def test_a_failure_receipt_on_an_unconfirmed_lease_counts_its_attempt(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    leased = await lease_confirmed_one(wire)
    assert (await wire.fail(leased)).state == pb.JOB_STATE_FAILED


async def test_the_window_is_never_longer_than_the_jobs_lease(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(2))
    leased = await lease_confirmed_one(wire, confirm_within=60.0)
    assert micros(leased.lease_expires_at) == clock.now() + 2 * S
    clock.advance(2)
    await coordinator.reaper.run_once(clock.now())
    job = await wire.get(leased.job_id)
    assert (job.state, job.attempt) == (pb.JOB_STATE_AVAILABLE, 0)


async def test_confirm_without_confirm_within_waits_ten_seconds(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(60))
    leased = await lease_confirmed_one(wire, confirm_within=None)
    assert micros(leased.lease_expires_at) == clock.now() + 10 * S


async def test_an_unconfirmed_job_asked_to_stop_ends_cancelled_unrun(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=3, lease_duration=seconds(30))
    leased = await lease_confirmed_one(wire)
    await wire.stub.CancelJob(pb.CancelJobRequest(job_id=leased.job_id))
    clock.advance(5)
    await coordinator.reaper.run_once(clock.now())
    job = await wire.get(leased.job_id)
    assert (job.state, job.attempt) == (pb.JOB_STATE_CANCELLED, 0)


async def test_without_confirm_a_lease_runs_its_full_duration_and_expiry_fails_it(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(max_attempts=1, lease_duration=seconds(30))
    leased = await wire.lease_one()
    assert micros(leased.lease_expires_at) == clock.now() + 30 * S
    clock.advance(10)
    await coordinator.reaper.run_once(clock.now())
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED
    clock.advance(20)
    await coordinator.reaper.run_once(clock.now())
    job = await wire.get(leased.job_id)
    assert (job.state, job.attempt) == (pb.JOB_STATE_FAILED, 1)


@pytest.mark.parametrize(
    ("confirm", "within", "wrong"),
    [
        (False, 5.0, "confirm_within is set but confirm is false"),
        (True, 0.0, "confirm_within must be between 1 ms and 24 h"),
        (True, 86401.0, "confirm_within must be between 1 ms and 24 h"),
    ],
)
async def test_a_bad_confirmation_request_is_refused(
    wire: Wire, confirm: bool, within: float, wrong: str
) -> None:
    request = pb.LeaseRequest(worker_id=WORKER, queues=[QUEUE], confirm=confirm)
    request.confirm_within.CopyFrom(seconds(within))
    details = await refused(wire.stub.Lease(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert wrong in details


# -- the reproduction ----------------------------------------------------------------

REPRO_QUEUE = "confirmed-leases"
_CALLS = 150


async def _jobs_after_restart(config: ServerConfig, clock: FakeClock) -> list[pb.Job]:
    """Every job once the confirmation windows have passed and the reaper has run, as a new
    coordinator on the same database finds them."""
    again = await Coordinator.start(config, clock=clock)
    try:
        await again.reaper.run_once(clock.now())
        async with grpc.aio.insecure_channel(again.address) as channel:
            return await Wire(rpc.CoordinatorServiceStub(channel)).jobs(REPRO_QUEUE)
    finally:
        await again.stop(grace=1.0)


async def test_leases_cancelled_by_their_client_strand_no_job_when_confirmed(
    coordinator: Coordinator,
    stub: rpc.CoordinatorServiceStub,
    server_config: ServerConfig,
    clock: FakeClock,
) -> None:
    """300 due jobs, max_attempts 1, lease 2 s; 150 Lease{max_jobs 1, wait 20 s} calls, each
    cancelled by the client 0-8 ms after sending. Wherever a cancel lands (during the claim,
    while the reply is built, after it was written: then the client drops it unseen), a job
    whose reply did not arrive is AVAILABLE again once its window passes, its attempt unspent.
    A reply that did arrive is confirmed and its job run, as an SDK worker does."""
    spec = pb.JobSpec(queue=REPRO_QUEUE, task_type="t", max_attempts=1, lease_duration=seconds(2))
    await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[spec] * 300))
    rng = random.Random(8)

    async def lease_and_cancel(worker: str) -> list[str]:
        request = confirm_lease(REPRO_QUEUE, confirm_within=1.0, worker_id=worker)
        request.wait.CopyFrom(seconds(20))
        call = stub.Lease(request)
        await asyncio.sleep(rng.uniform(0, 0.008))
        call.cancel()
        try:
            reply = await call
        except asyncio.CancelledError:
            return []
        for job in reply.jobs:
            await stub.Heartbeat(
                pb.HeartbeatRequest(job_id=job.job_id, lease_token=job.lease_token)
            )
            await stub.Receipt(
                pb.ReceiptRequest(
                    job_id=job.job_id, lease_token=job.lease_token, outcome=pb.OUTCOME_SUCCESS
                )
            )
        return [job.job_id for job in reply.jobs]

    replies = await asyncio.gather(*(lease_and_cancel(f"worker-{i}") for i in range(_CALLS)))
    # Stopping waits for every call and every hand-back. Then the confirmation windows (1 s)
    # pass, inside the 2 s leases, and the reaper runs once.
    await coordinator.stop(grace=10.0)
    clock.advance(1.5)

    jobs = await _jobs_after_restart(server_config, clock)
    assert len(jobs) == 300
    received = {job_id for reply in replies for job_id in reply}
    done = {job.job_id for job in jobs if job.state == pb.JOB_STATE_SUCCEEDED}
    assert done == received
    others = [job for job in jobs if job.job_id not in received]
    assert {(job.state, job.attempt) for job in others} == {(pb.JOB_STATE_AVAILABLE, 0)}


# How long the hook below holds the coordinator's loop after a client cancels, so that the
# cancel crosses the loopback connection before the reply's message is sent (generous: gRPC's
# own threads need the CPU to carry the cancel on a loaded machine; see test_lease_cancel.py).
_CANCEL_IN_FLIGHT_SECONDS = 0.1
_AFTER_SEND_CALLS = 20


class _CancelledOnceHeadersSent:
    """A servicer context whose client cancels its call right after the coordinator sent the
    reply's headers: the last moment the coordinator checks for a caller that went away, so
    the cancel lands where the coordinator cannot see it and the client drops the reply."""

    def __init__(self, context: Any, cancel: Callable[[], object]) -> None:
        self._context = context
        self._cancel = cancel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def send_initial_metadata(self, metadata: Any) -> None:
        await self._context.send_initial_metadata(metadata)
        self._cancel()
        # Blocking on purpose: holds the loop while the cancel is on its way.
        time.sleep(_CANCEL_IN_FLIGHT_SECONDS)  # noqa: ASYNC251


async def _lease_with_cancel_after_send(
    config: ServerConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, confirm: bool
) -> tuple[set[str], list[pb.Job]]:
    """Leases one job per call, every call cancelled by its client after the headers of its
    reply went out; returns the jobs any client received, and every job once the windows (or
    the leases, without confirm) have passed and the reaper has run."""
    calls: dict[str, Any] = {}
    real_lease: Callable[..., Awaitable[pb.LeaseResponse]] = CoordinatorServicer.Lease

    async def lease(self: Any, request: pb.LeaseRequest, context: Any) -> pb.LeaseResponse:
        cancel = calls[request.worker_id].cancel
        return await real_lease(self, request, _CancelledOnceHeadersSent(context, cancel))

    monkeypatch.setattr(CoordinatorServicer, "Lease", lease)  # before the servicer is wired
    coordinator = await Coordinator.start(config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            spec = pb.JobSpec(
                queue=REPRO_QUEUE, task_type="t", max_attempts=1, lease_duration=seconds(2)
            )
            await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[spec] * _AFTER_SEND_CALLS))
            received: set[str] = set()
            for i in range(_AFTER_SEND_CALLS):
                worker = f"worker-{i}"
                request = pb.LeaseRequest(
                    worker_id=worker, queues=[REPRO_QUEUE], max_jobs=1, wait=seconds(20)
                )
                if confirm:
                    request.confirm = True
                    request.confirm_within.CopyFrom(seconds(1))
                calls[worker] = call = stub.Lease(request)
                try:
                    reply = await call
                except asyncio.CancelledError:
                    continue
                received.update(job.job_id for job in reply.jobs)  # the cancel came too late
    finally:
        await coordinator.stop(grace=10.0)
    monkeypatch.undo()
    clock.advance(2.5)  # past the windows and past the leases
    return received, await _jobs_after_restart(config, clock)


async def test_a_lease_cancelled_after_its_reply_went_out_strands_no_confirmed_job(
    server_config: ServerConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    received, jobs = await _lease_with_cancel_after_send(
        server_config, clock, monkeypatch, confirm=True
    )
    unseen = [job for job in jobs if job.job_id not in received]
    assert {(job.state, job.attempt) for job in unseen} == {(pb.JOB_STATE_AVAILABLE, 0)}


async def test_without_confirm_a_lease_cancelled_after_its_reply_went_out_is_lost(
    server_config: ServerConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why confirmation exists: the coordinator cannot see these cancels, so without it the
    jobs of the dropped replies run out their leases and, at max_attempts 1, fail unrun."""
    received, jobs = await _lease_with_cancel_after_send(
        server_config, clock, monkeypatch, confirm=False
    )
    unseen = [job for job in jobs if job.job_id not in received]
    assert unseen
    assert {(job.state, job.attempt) for job in unseen} == {(pb.JOB_STATE_FAILED, 1)}
