"""Fencing: only the current lease's token moves a job; repeated receipts are harmless."""

from __future__ import annotations

from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import Wire, micros, refused, seconds

WRONG_TOKEN = "0" * 32


async def leased(wire: Wire, **spec: Any) -> pb.LeasedJob:
    await wire.enqueue(**spec)
    return await wire.lease_one()


async def test_a_receipt_with_a_wrong_token_is_refused_and_changes_nothing(wire: Wire) -> None:
    job = await leased(wire)
    before = await wire.get(job.job_id)
    message = await refused(
        wire.receipt(job, pb.OUTCOME_SUCCESS, token=WRONG_TOKEN),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert job.job_id in message
    assert await wire.get(job.job_id) == before
    assert before.state == pb.JOB_STATE_LEASED


async def test_a_heartbeat_with_a_wrong_token_is_refused_and_changes_nothing(
    wire: Wire, clock: FakeClock
) -> None:
    job = await leased(wire)
    before = await wire.get(job.job_id)
    clock.advance(5)
    await refused(
        wire.heartbeat(job, token=WRONG_TOKEN, extend_by=seconds(600), checkpoint=b"stolen"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    after = await wire.get(job.job_id)
    assert after == before
    assert after.checkpoint == b""


async def test_a_failure_receipt_with_a_wrong_token_counts_no_attempt(wire: Wire) -> None:
    job = await leased(wire)
    await refused(
        wire.receipt(job, pb.OUTCOME_FAILURE, token=WRONG_TOKEN),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    after = await wire.get(job.job_id)
    assert (after.state, after.attempt, list(after.attempts)) == (pb.JOB_STATE_LEASED, 1, [])


async def test_repeating_a_success_receipt_with_the_same_token_is_harmless(
    wire: Wire, clock: FakeClock
) -> None:
    job = await leased(wire)
    first = await wire.succeed(job, result=b"done")
    settled = await wire.get(job.job_id)
    clock.advance(10)
    again = await wire.succeed(job, result=b"done")
    assert first.state == again.state == pb.JOB_STATE_SUCCEEDED
    assert await wire.get(job.job_id) == settled
    assert (settled.result, len(settled.attempts)) == (b"done", 1)


async def test_repeating_a_failure_receipt_does_not_count_a_second_attempt(
    wire: Wire, clock: FakeClock
) -> None:
    job = await leased(wire, max_attempts=5)
    first = await wire.fail(job)
    settled = await wire.get(job.job_id)
    clock.advance(0.5)
    again = await wire.fail(job)
    assert first.state == again.state == pb.JOB_STATE_SCHEDULED
    assert first.next_run_at == again.next_run_at
    assert await wire.get(job.job_id) == settled
    assert len(settled.attempts) == 1


async def test_a_late_receipt_from_an_expired_and_re_leased_lease_is_refused(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    old = await leased(wire, lease_duration=seconds(10))
    clock.advance(11)
    await coordinator.reaper.run_once(clock.now())
    new = await wire.lease_one(worker_id="worker-2")
    assert new.job_id == old.job_id and new.lease_token != old.lease_token
    await refused(wire.succeed(old, result=b"late"), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(wire.heartbeat(old), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await wire.get(old.job_id)).state == pb.JOB_STATE_LEASED
    done = await wire.succeed(new, result=b"on time")
    job = await wire.get(new.job_id)
    assert done.state == job.state == pb.JOB_STATE_SUCCEEDED
    assert job.result == b"on time"


async def test_a_receipt_after_expiry_is_refused_even_before_the_reaper_runs(
    wire: Wire, clock: FakeClock
) -> None:
    job = await leased(wire, lease_duration=seconds(10))
    clock.advance(10)
    await refused(wire.succeed(job), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(wire.heartbeat(job), grpc.StatusCode.FAILED_PRECONDITION)
    # The background reaper may or may not have rescued the job by now; the receipt did not.
    after = await wire.get(job.job_id)
    assert after.state in (pb.JOB_STATE_LEASED, pb.JOB_STATE_AVAILABLE)
    assert after.result == b"" and pb.OUTCOME_SUCCESS not in [a.outcome for a in after.attempts]


async def test_a_receipt_just_before_expiry_is_accepted(wire: Wire, clock: FakeClock) -> None:
    job = await leased(wire, lease_duration=seconds(10))
    clock.advance(9.999)
    assert (await wire.succeed(job)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_receipt_batch_judges_each_item_on_its_own(wire: Wire) -> None:
    for _ in range(2):
        await wire.enqueue()
    good, bad = await wire.lease(max_jobs=2)
    reply = await wire.stub.ReceiptBatch(
        pb.ReceiptBatchRequest(
            receipts=[
                pb.ReceiptRequest(
                    job_id=bad.job_id, lease_token=WRONG_TOKEN, outcome=pb.OUTCOME_SUCCESS
                ),
                pb.ReceiptRequest(
                    job_id=good.job_id,
                    lease_token=good.lease_token,
                    outcome=pb.OUTCOME_SUCCESS,
                    result=b"ok",
                ),
            ]
        )
    )
    assert [r.code for r in reply.results] == [9, 0]  # FAILED_PRECONDITION, OK
    assert reply.results[0].message
    assert reply.results[1].response.state == pb.JOB_STATE_SUCCEEDED
    assert (await wire.get(good.job_id)).result == b"ok"
    assert (await wire.get(bad.job_id)).state == pb.JOB_STATE_LEASED


async def test_a_receipt_batch_reports_an_invalid_item_without_failing_the_rest(
    wire: Wire,
) -> None:
    for _ in range(2):
        await wire.enqueue()
    first, second = await wire.lease(max_jobs=2)
    reply = await wire.stub.ReceiptBatch(
        pb.ReceiptBatchRequest(
            receipts=[
                pb.ReceiptRequest(
                    job_id=first.job_id,
                    lease_token=first.lease_token,
                    outcome=pb.OUTCOME_UNSPECIFIED,
                ),
                pb.ReceiptRequest(
                    job_id=second.job_id,
                    lease_token=second.lease_token,
                    outcome=pb.OUTCOME_SUCCESS,
                ),
            ]
        )
    )
    assert [r.code for r in reply.results] == [3, 0]  # INVALID_ARGUMENT, OK
    assert "receipts[0].outcome" in reply.results[0].message
    assert (await wire.get(first.job_id)).state == pb.JOB_STATE_LEASED
    assert (await wire.get(second.job_id)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_heartbeat_batch_judges_each_item_on_its_own(wire: Wire, clock: FakeClock) -> None:
    for _ in range(2):
        await wire.enqueue()
    good, bad = await wire.lease(max_jobs=2)
    clock.advance(5)
    reply = await wire.stub.HeartbeatBatch(
        pb.HeartbeatBatchRequest(
            heartbeats=[
                pb.HeartbeatRequest(job_id=good.job_id, lease_token=good.lease_token),
                pb.HeartbeatRequest(job_id=bad.job_id, lease_token=WRONG_TOKEN),
            ]
        )
    )
    assert [r.code for r in reply.results] == [0, 9]
    assert micros(reply.results[0].response.lease_expires_at) == clock.now() + 30 * 1_000_000
    assert (await wire.get(bad.job_id)).lease_expires_at == bad.lease_expires_at
