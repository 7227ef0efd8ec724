"""The "202 now, receipt later" mode of the push app: for work longer than an HTTP request may
stay open. The app answers 202 Accepted at once; the handler runs on in the background while
this module heartbeats its lease over the coordinator's HTTP/JSON API (the lease token and
deadline came in the push headers) and posts its receipt there when it ends.

HTTP rather than gRPC: a function behind a URL may have only HTTP egress, and the HTTP API
speaks the same messages (proto JSON) with the same fencing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from conveyor._running import RunningJob, StopReason
from conveyor.v1 import coordinator_pb2 as pb

if TYPE_CHECKING:
    from conveyor.worker import Worker

log = logging.getLogger("conveyor.push")

# gRPC status numbers in the HTTP API's google.rpc.Status bodies that mean "this lease is
# over" (FAILED_PRECONDITION: fenced; NOT_FOUND: the job is gone).
_LEASE_OVER_CODES = frozenset({5, 9})
_INVALID_ARGUMENT = 3
# HTTP statuses worth trying again: the coordinator is busy, restarting or behind a proxy.
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Heartbeats never come closer together than this, however short the lease.
MIN_HEARTBEAT_SECONDS = 0.05
# Backoff between tries of a receipt the coordinator could not take yet.
RECEIPT_BACKOFF_FIRST = 0.1
RECEIPT_BACKOFF_MAX = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0


class _Transient(Exception):
    """The coordinator could not answer now; the same call may succeed later."""


def parse_deadline(value: str | None) -> float | None:
    """Conveyor-Deadline (RFC 3339, UTC) as unix seconds; None when absent or malformed."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class BackgroundRunner:
    """Runs accepted jobs to their end: handler, heartbeats, receipt. One per app."""

    def __init__(self, worker: Worker, coordinator_url: str, headers: Mapping[str, str]) -> None:
        self._worker = worker
        self._base = coordinator_url.rstrip("/")
        self._headers = dict(headers)
        self._client: httpx.AsyncClient | None = None
        self._running: dict[str, RunningJob] = {}  # by lease token
        self._tasks: set[asyncio.Task[None]] = set()
        # For monitoring and tests: receipts the coordinator took, and refused (lease over).
        self.receipts_sent = 0
        self.receipts_refused = 0

    def accept(self, running: RunningJob, deadline: float | None) -> None:
        """Starts the job unless this lease already runs here (a push is never sent twice
        for one lease; this only keeps a replayed request from running it twice)."""
        token = running.job.lease_token
        if token in self._running:
            return
        self._running[token] = running
        task = asyncio.create_task(self._run(running, deadline), name=f"conveyor-push-{token}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float) -> None:
        """Lets accepted jobs finish for `grace` seconds, then stops the rest and hands them
        back (RELEASE, no attempt counted); closes the client. Safe to call twice."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for running in list(self._running.values()):
            running.stop(StopReason.SHUTDOWN)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, running: RunningJob, deadline: float | None) -> None:
        try:
            receipt = await self._outcome(running, deadline)
        finally:
            del self._running[running.job.lease_token]
        if running.stop_reason is StopReason.LEASE_LOST or receipt is None:
            return  # someone else owns the job now: stay silent (fencing)
        if receipt.outcome != pb.OUTCOME_SUCCESS:
            # Progress saved since the last heartbeat is meant for the next attempt.
            checkpoint = running.context._take_unsent_checkpoint()
            if checkpoint is not None:
                await self._heartbeat_once(running, checkpoint)
        await self._send_receipt(receipt)

    async def _outcome(
        self, running: RunningJob, deadline: float | None
    ) -> pb.ReceiptRequest | None:
        """Hands the handler the job's checkpoint, runs it while heartbeating the lease, and
        returns the receipt to send (None: send nothing)."""
        deadline = await self._hand_checkpoint(running, deadline)
        if running.stop_reason is not None:  # lost, cancelled or shut down before it started
            return self._worker._receipt_after_stop(running)
        handler = asyncio.create_task(self._worker._run_handler(running))
        running.task = handler  # type: ignore[assignment]  # stop() cancels it
        beats = asyncio.create_task(self._heartbeats(running, deadline))
        try:
            receipt: pb.ReceiptRequest | None = await handler
        except asyncio.CancelledError:
            if not handler.cancelled():
                raise  # this task itself was cancelled
            receipt = self._worker._receipt_after_stop(running)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        return receipt

    async def _hand_checkpoint(self, running: RunningJob, deadline: float | None) -> float | None:
        """Before the handler starts: one heartbeat asking for the checkpoint an earlier
        attempt saved (the push request carries only the payload), which the handler then
        finds in ctx.checkpoint. Tries again while the coordinator cannot answer and the
        lease holds. Returns the lease's end as that heartbeat left it."""
        job = running.job
        request = pb.HeartbeatRequest(
            job_id=job.job_id, lease_token=job.lease_token, return_checkpoint=True
        )
        backoff = RECEIPT_BACKOFF_FIRST
        while running.stop_reason is None:
            try:
                status, body = await self._call(f"/v1/jobs/{job.job_id}:heartbeat", request)
            except _Transient as exc:
                if deadline is not None and time.time() + backoff >= deadline:
                    self._lose(running, "the lease ran out before a heartbeat got through")
                    break
                log.warning("heartbeat of job %s failed (%s); trying again", job.job_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECEIPT_BACKOFF_MAX)
                continue
            if status == 200:
                reply = json_format.ParseDict(
                    body, pb.HeartbeatResponse(), ignore_unknown_fields=True
                )
                if reply.checkpoint:  # empty means none, as in LeasedJob
                    running.context.checkpoint = reply.checkpoint
                if reply.cancel_requested:
                    running.stop(StopReason.CANCEL_REQUESTED, cancel_task=False)
                if reply.HasField("lease_expires_at"):
                    return reply.lease_expires_at.ToMicroseconds() / 1e6
                return deadline
            if _predates_return_checkpoint(status, body):
                log.warning(
                    "the coordinator does not know return_checkpoint (an older version): job "
                    "%s runs without an earlier attempt's checkpoint",
                    job.job_id,
                )
                return deadline
            self._lose(running, _describe(status, body))
        return deadline

    async def _heartbeats(self, running: RunningJob, deadline: float | None) -> None:
        """Keeps the lease while the handler runs: a heartbeat each time a third (the worker's
        heartbeat_fraction) of what is left of the lease has passed, or at once when the
        handler asks (ctx.heartbeat_now()). The lease is lost when it runs out unrenewed."""
        asked = asyncio.Event()
        loop = asyncio.get_running_loop()

        def ask() -> None:  # ctx.heartbeat_now(), perhaps from a sync handler's thread
            loop.call_soon_threadsafe(asked.set)

        running.context._on_heartbeat_request = ask
        fraction = self._worker.config.heartbeat_fraction
        expires_at = deadline
        while True:
            now = time.time()
            if expires_at is not None and now >= expires_at:
                self._lose(running, "the lease ran out before a heartbeat got through")
                return
            wait = 0.0 if expires_at is None else (expires_at - now) * fraction
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asked.wait(), max(wait, MIN_HEARTBEAT_SECONDS))
            asked.clear()
            checkpoint = running.context._take_unsent_checkpoint()
            reply = await self._heartbeat_once(running, checkpoint)
            if reply is None:
                if running.stop_reason is StopReason.LEASE_LOST:
                    return
                continue  # a transient failure: try again sooner, while the lease holds
            if reply.HasField("lease_expires_at"):
                expires_at = reply.lease_expires_at.ToMicroseconds() / 1e6
            if reply.cancel_requested and running.stop_reason is None:
                task = self._worker._task_for(running.job)
                # Async handlers are cancelled; sync ones see ctx.cancelled, as in a worker.
                is_async = task is not None and task.is_async
                running.stop(StopReason.CANCEL_REQUESTED, cancel_task=is_async)

    async def _heartbeat_once(
        self, running: RunningJob, checkpoint: bytes | None
    ) -> pb.HeartbeatResponse | None:
        """One heartbeat; None when it did not get through (and then the lease is marked
        lost if the coordinator says it is over)."""
        job = running.job
        request = pb.HeartbeatRequest(job_id=job.job_id, lease_token=job.lease_token)
        if checkpoint is not None:
            request.checkpoint = checkpoint
        try:
            status, body = await self._call(f"/v1/jobs/{job.job_id}:heartbeat", request)
        except _Transient as exc:
            if checkpoint is not None:
                running.context._unsent_again(checkpoint)
            log.warning("heartbeat of job %s failed (%s); trying again", job.job_id, exc)
            return None
        if status == 200:
            return json_format.ParseDict(body, pb.HeartbeatResponse(), ignore_unknown_fields=True)
        self._lose(running, _describe(status, body))
        return None

    def _lose(self, running: RunningJob, why: str) -> None:
        log.warning("lease lost on job %s (%s); abandoning it", running.job.job_id, why)
        running.stop(StopReason.LEASE_LOST)

    async def _send_receipt(self, receipt: pb.ReceiptRequest) -> None:
        """Posts the receipt, trying again while the coordinator cannot take it, for up to
        the worker's receipt_retry_for seconds."""
        give_up = time.monotonic() + self._worker.config.receipt_retry_for
        backoff = RECEIPT_BACKOFF_FIRST
        while True:
            try:
                status, body = await self._call(f"/v1/jobs/{receipt.job_id}:receipt", receipt)
                break
            except _Transient as exc:
                if time.monotonic() + backoff > give_up:
                    log.error("receipt of job %s not delivered (%s)", receipt.job_id, exc)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RECEIPT_BACKOFF_MAX)
        if status == 200:
            self.receipts_sent += 1
            if receipt.outcome != pb.OUTCOME_RELEASE:
                self._worker.processed += 1
            return
        # Fencing: the lease ended (expired, cancelled, handed to another) before the receipt.
        self.receipts_refused += 1
        log.warning("receipt of job %s refused: %s", receipt.job_id, _describe(status, body))

    async def _call(self, path: str, request: Message) -> tuple[int, dict[str, Any]]:
        """POSTs `request` as proto JSON; the status and JSON body of a final answer, or
        _Transient for a connection error or a status worth trying again."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS)
        document = json_format.MessageToDict(request, preserving_proto_field_name=True)
        try:
            reply = await self._client.post(self._base + path, json=document, headers=self._headers)
        except httpx.HTTPError as exc:
            raise _Transient(type(exc).__name__) from None
        if reply.status_code in _TRANSIENT_STATUSES:
            raise _Transient(f"HTTP {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            body = {}
        return reply.status_code, body if isinstance(body, dict) else {}


def _predates_return_checkpoint(status: int, body: dict[str, Any]) -> bool:
    """A coordinator older than HeartbeatRequest.return_checkpoint refuses the unknown JSON
    field (HTTP 400, INVALID_ARGUMENT naming it)."""
    return (
        status == 400
        and body.get("code") == _INVALID_ARGUMENT
        and "return_checkpoint" in str(body.get("message", ""))
    )


def _describe(status: int, body: dict[str, Any]) -> str:
    code = body.get("code")
    what = "the lease is over" if code in _LEASE_OVER_CODES else "refused"
    return f"{what}: HTTP {status}, code {code}: {str(body.get('message', ''))[:200]}"
