"""The worker's report phase: receipts are coalesced into ReceiptBatch calls, sent when
`batch_size` are pending or `flush_interval` after the first one arrived, one call at a time.

`send` is synchronous, so a handler cancelled at any point cannot lose its receipt once it was
handed over. Receipts are idempotent per (job, lease token): a batch whose call failed in
transit (UNAVAILABLE, deadline) is sent again with backoff. A checkpoint saved after the last
heartbeat travels in a HeartbeatBatch sent just before the receipts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from conveyor._outcome import MAX_ERROR_MESSAGE
from conveyor.errors import status_code
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")

_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_CALL_TIMEOUT = 10.0
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
# The error type of the failure sent in place of a receipt the coordinator refused as invalid.
INVALID_RECEIPT_ERROR_TYPE = "InvalidReceipt"


class Receipts:
    def __init__(
        self,
        stub: rpc.CoordinatorServiceAsyncStub,
        *,
        flush_interval: float,
        batch_size: int,
        retry_for: float,
    ) -> None:
        self._stub = stub
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._retry_for = retry_for
        self._pending: list[pb.ReceiptRequest] = []
        self._checkpoints: list[pb.HeartbeatRequest] = []
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self.delivered = 0

    def send(self, receipt: pb.ReceiptRequest, checkpoint: bytes | None = None) -> None:
        if checkpoint is not None:
            self._checkpoints.append(
                pb.HeartbeatRequest(
                    job_id=receipt.job_id, lease_token=receipt.lease_token, checkpoint=checkpoint
                )
            )
        pending = self._pending
        pending.append(receipt)
        if len(pending) == 1:
            self._wakeup.set()
        if len(pending) >= self._batch_size:
            self._full.set()

    def close(self) -> None:
        """Sends what is pending at once, then `run` returns."""
        self._closing = True
        self._wakeup.set()
        self._full.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._closing and len(self._pending) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._full.wait()
            self._wakeup.clear()
            self._full.clear()
            while self._pending:
                batch = self._pending[: self._batch_size]
                del self._pending[: len(batch)]
                checkpoints, self._checkpoints = self._checkpoints, []
                if checkpoints:
                    await self._deliver_checkpoints(checkpoints)
                await self._deliver(batch)
            if self._closing:
                return

    async def _deliver_checkpoints(self, checkpoints: list[pb.HeartbeatRequest]) -> None:
        request = pb.HeartbeatBatchRequest(heartbeats=checkpoints)
        # A refused item means the lease is gone; its receipt will be refused too.
        await self._with_retry(lambda: self._stub.HeartbeatBatch(request, timeout=_CALL_TIMEOUT))

    async def _deliver(self, batch: list[pb.ReceiptRequest]) -> None:
        request = pb.ReceiptBatchRequest(receipts=batch)
        reply = await self._with_retry(
            lambda: self._stub.ReceiptBatch(request, timeout=_CALL_TIMEOUT)
        )
        if reply is None:
            log.error(
                "gave up on %d receipts; their leases will expire and the jobs run again",
                len(batch),
            )
            return
        self.delivered += len(batch)
        for receipt, result in zip(batch, reply.results, strict=True):
            if result.code:
                self._refused(receipt, status_code(result.code), result.message)

    def _refused(self, receipt: pb.ReceiptRequest, code: grpc.StatusCode, message: str) -> None:
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            log.warning("receipt for job %s dropped: lease lost (%s)", receipt.job_id, message)
        elif code == grpc.StatusCode.INVALID_ARGUMENT and not _is_fallback(receipt):
            # An oversized result, say: fail the attempt with the reason instead of leaving
            # the job leased until its lease runs out.
            log.warning("receipt for job %s refused: %s", receipt.job_id, message)
            self.send(_fallback_failure(receipt, message))
        else:
            log.warning("receipt for job %s refused (%s): %s", receipt.job_id, code.name, message)

    async def _with_retry(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """The reply, retrying transient failures for up to `retry_for` seconds."""
        give_up_at = time.monotonic() + self._retry_for
        backoff = _FIRST_BACKOFF
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RETRYABLE or time.monotonic() + backoff > give_up_at:
                    log.error("%s: %s", error.code().name, error.details())
                    return None
                log.warning("coordinator %s; retrying in %.2fs", error.code().name, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


def _fallback_failure(receipt: pb.ReceiptRequest, message: str) -> pb.ReceiptRequest:
    return pb.ReceiptRequest(
        job_id=receipt.job_id,
        lease_token=receipt.lease_token,
        outcome=pb.OUTCOME_FAILURE,
        error=pb.JobError(
            message=f"the coordinator refused this attempt's receipt: {message}"[
                :MAX_ERROR_MESSAGE
            ],
            type=INVALID_RECEIPT_ERROR_TYPE,
        ),
    )


def _is_fallback(receipt: pb.ReceiptRequest) -> bool:
    return receipt.error.type == INVALID_RECEIPT_ERROR_TYPE
