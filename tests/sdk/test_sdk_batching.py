"""The worker's report and heartbeat phases, against a fake stub that records its calls."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import pytest
from conveyor._heartbeats import Heartbeats
from conveyor._receipts import Receipts
from conveyor._running import RunningJob
from conveyor.context import JobContext
from conveyor.v1 import coordinator_pb2 as pb

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


class FakeStub:
    """Answers ReceiptBatch and HeartbeatBatch with OK, or as told."""

    def __init__(self) -> None:
        self.receipt_batches: list[list[pb.ReceiptRequest]] = []
        self.heartbeat_batches: list[list[pb.HeartbeatRequest]] = []
        self.calls: list[str] = []
        self.unavailable_times = 0
        self.refuse: set[str] = set()  # job ids answered FAILED_PRECONDITION
        self.heartbeats_seen: asyncio.Queue[list[pb.HeartbeatRequest]] = asyncio.Queue()

    async def ReceiptBatch(self, request: pb.ReceiptBatchRequest, timeout: float) -> Any:
        self.calls.append("ReceiptBatch")
        if self.unavailable_times:
            self.unavailable_times -= 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", ""
            )
        self.receipt_batches.append(list(request.receipts))
        return pb.ReceiptBatchResponse(
            results=[
                pb.ReceiptResult(code=FAILED_PRECONDITION if r.job_id in self.refuse else 0)
                for r in request.receipts
            ]
        )

    async def HeartbeatBatch(
        self, request: pb.HeartbeatBatchRequest, timeout: float, wait_for_ready: bool = False
    ) -> Any:
        self.calls.append("HeartbeatBatch")
        self.heartbeat_batches.append(list(request.heartbeats))
        self.heartbeats_seen.put_nowait(list(request.heartbeats))
        return pb.HeartbeatBatchResponse(
            results=[
                pb.HeartbeatResult(code=FAILED_PRECONDITION if h.job_id in self.refuse else 0)
                for h in request.heartbeats
            ]
        )


def _receipt(job_id: str) -> pb.ReceiptRequest:
    return pb.ReceiptRequest(job_id=job_id, lease_token="t-" + job_id, outcome=pb.OUTCOME_SUCCESS)


async def _run_receipts(stub: FakeStub, fill: Any, flush_interval: float = 0.005) -> None:
    receipts = Receipts(
        stub,  # type: ignore[arg-type]
        flush_interval=flush_interval,
        batch_size=100,
        retry_for=5,
    )
    sender = asyncio.create_task(receipts.run())
    await fill(receipts)
    receipts.close()
    await asyncio.wait_for(sender, 5)


async def test_receipts_go_in_batches_of_at_most_one_hundred() -> None:
    stub = FakeStub()

    async def fill(receipts: Receipts) -> None:
        for i in range(250):
            receipts.send(_receipt(f"j{i}"))

    await _run_receipts(stub, fill)

    assert [len(b) for b in stub.receipt_batches] == [100, 100, 50]


async def test_receipts_sent_within_the_flush_interval_share_one_call() -> None:
    stub = FakeStub()

    async def fill(receipts: Receipts) -> None:
        for i in range(5):
            receipts.send(_receipt(f"j{i}"))
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # well past the flush interval

    await _run_receipts(stub, fill, flush_interval=0.05)

    assert [len(b) for b in stub.receipt_batches] == [5]


async def test_receipt_batch_is_retried_while_the_coordinator_is_unavailable() -> None:
    stub = FakeStub()
    stub.unavailable_times = 2

    async def fill(receipts: Receipts) -> None:
        receipts.send(_receipt("j1"))

    await _run_receipts(stub, fill)

    assert stub.calls == ["ReceiptBatch"] * 3
    assert [r.job_id for b in stub.receipt_batches for r in b] == ["j1"]


async def test_receipt_refused_for_a_lost_lease_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub = FakeStub()
    stub.refuse = {"lost"}

    async def fill(receipts: Receipts) -> None:
        receipts.send(_receipt("lost"))
        receipts.send(_receipt("kept"))

    with caplog.at_level(logging.WARNING, "conveyor.worker"):
        await _run_receipts(stub, fill)

    assert len(stub.receipt_batches) == 1  # not sent again
    assert "lost" in caplog.text and "lease lost" in caplog.text


async def test_checkpoint_saved_after_the_last_heartbeat_precedes_its_receipt() -> None:
    stub = FakeStub()

    async def fill(receipts: Receipts) -> None:
        failure = pb.ReceiptRequest(job_id="j1", lease_token="t", outcome=pb.OUTCOME_FAILURE)
        receipts.send(failure, checkpoint=b"step-3")

    await _run_receipts(stub, fill)

    assert stub.calls == ["HeartbeatBatch", "ReceiptBatch"]
    assert stub.heartbeat_batches[0][0].checkpoint == b"step-3"


def _running(job_id: str, interval: float = 10.0) -> RunningJob:
    job = pb.LeasedJob(job_id=job_id, lease_token="t-" + job_id, task_type="t")
    context = JobContext(job_id=job_id, queue="q", task_type="t", payload=b"")
    return RunningJob(job, context, interval, time.monotonic())


async def test_heartbeat_carries_only_the_newest_checkpoint_once() -> None:
    stub = FakeStub()
    running = _running("j1", interval=0.05)
    jobs = {running.job.lease_token: running}
    heartbeats = Heartbeats(
        stub,  # type: ignore[arg-type]
        jobs,
        on_cancel_requested=lambda r: None,
        on_lease_lost=lambda r, m: None,
    )
    for value in (b"1", b"2", b"3"):
        running.context.save_checkpoint(value)
    beating = asyncio.create_task(heartbeats.run())
    try:
        async with asyncio.timeout(2):
            first = await stub.heartbeats_seen.get()
            second = await stub.heartbeats_seen.get()
    finally:
        beating.cancel()

    assert first[0].checkpoint == b"3"
    assert not second[0].HasField("checkpoint")


async def test_heartbeats_due_together_share_one_call_and_report_lost_leases() -> None:
    stub = FakeStub()
    stub.refuse = {"j2"}
    jobs = {r.job.lease_token: r for r in (_running("j1"), _running("j2"), _running("j3"))}
    lost: list[str] = []
    heartbeats = Heartbeats(
        stub,  # type: ignore[arg-type]
        jobs,
        on_cancel_requested=lambda r: None,
        on_lease_lost=lambda r, m: lost.append(r.job.job_id),
    )
    for r in jobs.values():
        r.next_heartbeat = 0  # all due now
    beating = asyncio.create_task(heartbeats.run())
    try:
        batch = await asyncio.wait_for(stub.heartbeats_seen.get(), 2)
    finally:
        beating.cancel()

    assert [h.job_id for h in batch] == ["j1", "j2", "j3"]
    assert lost == ["j2"]
