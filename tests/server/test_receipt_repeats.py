"""A receipt repeated after the job moved on: the same outcome and result again is a harmless
retry (OK with the job's state); another outcome or result under the same lease token
contradicts the receipt already applied (FAILED_PRECONDITION, nothing changes)."""

from __future__ import annotations

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from server_wire import Wire, refused, seconds


async def test_an_identical_repeated_success_is_ok_with_the_jobs_state(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.succeed(leased, result=b"done")
    assert (await wire.succeed(leased, result=b"done")).state == pb.JOB_STATE_SUCCEEDED
    assert (await wire.get(leased.job_id)).result == b"done"


async def test_a_repeated_success_with_another_result_is_failed_precondition(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.succeed(leased, result=b"first")
    await refused(wire.succeed(leased, result=b"second"), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await wire.get(leased.job_id)).result == b"first"


async def test_a_failure_after_a_success_with_the_same_token_is_failed_precondition(
    wire: Wire,
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.succeed(leased)
    await refused(wire.fail(leased), grpc.StatusCode.FAILED_PRECONDITION)
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_success_after_a_release_with_the_same_token_is_failed_precondition(
    wire: Wire,
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.receipt(leased, pb.OUTCOME_RELEASE)
    await refused(wire.succeed(leased, result=b"r"), grpc.StatusCode.FAILED_PRECONDITION)
    job = await wire.get(leased.job_id)
    assert (job.state, job.result) == (pb.JOB_STATE_AVAILABLE, b"")


async def test_an_identical_repeated_release_is_ok(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.receipt(leased, pb.OUTCOME_RELEASE)
    assert (await wire.receipt(leased, pb.OUTCOME_RELEASE)).state == pb.JOB_STATE_AVAILABLE


async def test_an_identical_repeated_failure_is_ok(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    first = await wire.fail(leased, retry_after=seconds(60))
    again = await wire.fail(leased, retry_after=seconds(60))
    assert first.state == again.state == pb.JOB_STATE_SCHEDULED


async def test_contradicting_receipts_in_one_batch_apply_only_the_first(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()

    def receipt(outcome: int, result: bytes) -> pb.ReceiptRequest:
        return pb.ReceiptRequest(
            job_id=leased.job_id,
            lease_token=leased.lease_token,
            outcome=outcome,  # type: ignore[arg-type]
            result=result,
        )

    reply = await wire.stub.ReceiptBatch(
        pb.ReceiptBatchRequest(
            receipts=[
                receipt(pb.OUTCOME_SUCCESS, b"a"),
                receipt(pb.OUTCOME_SUCCESS, b"a"),
                receipt(pb.OUTCOME_SUCCESS, b"b"),
            ]
        )
    )
    codes = [r.code for r in reply.results]
    assert codes == [0, 0, grpc.StatusCode.FAILED_PRECONDITION.value[0]]
    assert (await wire.get(leased.job_id)).result == b"a"
