"""The conformance kit's wire tap: a gRPC proxy between the worker under test and the kit's
coordinator. It passes every call through unchanged and records the worker-protocol calls
(Lease, Heartbeat[Batch], Receipt[Batch]), so that scenarios can check how a worker behaves on
the wire (how often it leases, for how many jobs, what it reports), and it can answer a job's
heartbeats with FAILED_PRECONDITION itself, as the coordinator does for a lost lease.

Every RPC of the service is unary, so one generic byte-forwarding handler serves them all; the
few it looks into are decoded with the SDK's generated messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from conveyor.v1 import coordinator_pb2 as pb

_SERVICE = "/conveyor.v1.CoordinatorService/"
# Replies as large as the coordinator may send: the tap must never be the smaller pipe.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
]
_LEASE_LOST = "lease lost (answered by the conformance kit, as the coordinator would)"
# How long the tap gives the coordinator to take back jobs of a Lease its caller cancelled.
_RELEASE_TIMEOUT = 10.0
# A worker's long-poll becomes upstream long-polls of at most this long, so that when the
# worker cancels its call the tap never has to cancel one (a Lease cancelled at the wrong
# moment may strand jobs at the coordinator): it lets the one in flight end instead.
_SHORT_POLL = 1.0
_POLL_SLACK = 10.0


@dataclass
class LeaseCall:
    """One Lease call as the tap saw it."""

    received_at: float
    request: pb.LeaseRequest
    replied_at: float | None = None
    # The jobs handed to the worker (empty until the reply, and for a failed call).
    jobs: list[pb.LeasedJob] = field(default_factory=list)
    code: grpc.StatusCode | None = None

    @property
    def wait_seconds(self) -> float:
        return self.request.wait.seconds + self.request.wait.nanos / 1e9


@dataclass(frozen=True)
class Report:
    """One heartbeat or receipt item (alone or in a batch) and the code it got."""

    at: float
    job_id: str
    lease_token: str
    code: grpc.StatusCode
    outcome: int = pb.OUTCOME_UNSPECIFIED  # receipts only


class WireTap:
    """The proxy: `address` is where workers connect; `upstream` is the coordinator."""

    def __init__(self, upstream: str) -> None:
        self._upstream_address = upstream
        self._channel = grpc.aio.insecure_channel(upstream, options=_CHANNEL_OPTIONS)
        self._server: grpc.aio.Server | None = None
        self.address = ""
        self.leases: list[LeaseCall] = []
        self.heartbeats: list[Report] = []
        self.receipts: list[Report] = []
        # Jobs whose next heartbeat is answered FAILED_PRECONDITION, and the tokens so fenced.
        self._fence_next: set[str] = set()
        self._fenced_tokens: set[str] = set()
        # Jobs of Lease replies the worker never got, handed back by the tap.
        self.handed_back: list[str] = []
        # Polls and releases still running for callers that have gone.
        self._tasks: set[asyncio.Future[Any]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> str:
        server = grpc.aio.server(options=_CHANNEL_OPTIONS)
        server.add_generic_rpc_handlers((_Handler(self),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        await self._channel.close(None)

    async def reconnect(self) -> None:
        """A fresh channel to the coordinator (after a restart), without the old channel's
        reconnect backoff."""
        old, self._channel = (
            self._channel,
            grpc.aio.insecure_channel(self._upstream_address, options=_CHANNEL_OPTIONS),
        )
        await old.close(None)

    def reset(self) -> None:
        """Forgets what was seen (between scenarios)."""
        self.leases, self.heartbeats, self.receipts, self.handed_back = [], [], [], []
        self._fence_next.clear()
        self._fenced_tokens.clear()

    def fence(self, job_id: str) -> None:
        """Answers the job's next heartbeat, and every later call with that lease token,
        FAILED_PRECONDITION, as if its lease had been lost."""
        self._fence_next.add(job_id)

    def fenced(self, token: str) -> bool:
        return token in self._fenced_tokens

    async def until(self, ready: Callable[[], Any], timeout: float) -> Any:
        """Waits until `ready()` is truthy and returns it; None after `timeout`."""
        deadline = time.monotonic() + timeout
        while not (value := ready()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return value

    def _note(self) -> None:
        self._changed.set()

    # -- forwarding ---------------------------------------------------------------------------

    async def forward(self, method: str, request: bytes, context: Any) -> bytes:
        """Passes one call to the coordinator; its error status goes back unchanged."""
        reply, error = await self._upstream(method, request, context)
        if error is not None:
            await _abort_with(context, error)
        assert reply is not None
        return bytes(reply)

    async def _upstream(
        self, method: str, request: bytes, context: Any
    ) -> tuple[bytes | None, grpc.aio.AioRpcError | None]:
        call = _unary(self._channel, method)(request, timeout=context.time_remaining())
        try:
            return await call, None
        except grpc.aio.AioRpcError as error:
            return None, error

    async def lease(self, request: bytes, context: Any) -> bytes:
        seen = LeaseCall(time.monotonic(), pb.LeaseRequest.FromString(request))
        self.leases.append(seen)
        self._note()
        poll = _Poll(self, seen.request, seen.received_at + seen.wait_seconds)
        pending = asyncio.ensure_future(poll.run())
        self._background(pending)
        try:
            reply = await asyncio.shield(pending)
        except asyncio.CancelledError:
            # The worker gave up on its long-poll. The short poll in flight is left to end
            # (cancelling it could strand jobs at the coordinator), and whatever it brings
            # is handed back, so that the tap itself never strands a job.
            poll.abandon()
            pending.add_done_callback(self._hand_back_poll)
            seen.code = grpc.StatusCode.CANCELLED
            self._note()
            raise
        except grpc.aio.AioRpcError as error:
            seen.code, seen.replied_at = error.code(), time.monotonic()
            self._note()
            await _abort_with(context, error)
            raise
        jobs = list(reply.jobs)
        seen.code, seen.replied_at, seen.jobs = grpc.StatusCode.OK, time.monotonic(), jobs
        if jobs:

            def hand_back_if_cancelled(ctx: Any) -> None:
                if ctx.cancelled():  # the reply never reached the worker
                    self._hand_back(jobs)

            context.add_done_callback(hand_back_if_cancelled)
        self._note()
        return bytes(reply.SerializeToString())

    async def upstream_lease(self, request: pb.LeaseRequest) -> pb.LeaseResponse:
        wait = request.wait.seconds + request.wait.nanos / 1e9
        raw = await _unary(self._channel, _SERVICE + "Lease")(
            request.SerializeToString(), timeout=wait + _POLL_SLACK
        )
        return pb.LeaseResponse.FromString(raw)

    def _background(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Returns once every poll the tap still runs for a gone caller has ended and the
        jobs it brought are handed back."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _hand_back_poll(self, done: asyncio.Future[pb.LeaseResponse]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._hand_back(done.result().jobs)

    def _hand_back(self, jobs: Any) -> None:
        if jobs:
            self.handed_back.extend(job.job_id for job in jobs)
            self._background(asyncio.ensure_future(self._release(list(jobs))))

    async def _release(self, jobs: list[pb.LeasedJob]) -> None:
        batch = pb.ReceiptBatchRequest(
            receipts=[
                pb.ReceiptRequest(
                    job_id=j.job_id, lease_token=j.lease_token, outcome=pb.OUTCOME_RELEASE
                )
                for j in jobs
            ]
        )
        with contextlib.suppress(grpc.aio.AioRpcError):
            await _unary(self._channel, _SERVICE + "ReceiptBatch")(
                batch.SerializeToString(), timeout=_RELEASE_TIMEOUT
            )

    # -- heartbeats and receipts --------------------------------------------------------------

    def _is_fenced(self, job_id: str, token: str) -> bool:
        if job_id in self._fence_next:
            self._fence_next.discard(job_id)
            self._fenced_tokens.add(token)
        return token in self._fenced_tokens

    async def heartbeat(self, request: bytes, context: Any) -> bytes:
        beat = pb.HeartbeatRequest.FromString(request)
        return await self._single("Heartbeat", beat, request, self.heartbeats, context)

    async def receipt(self, request: bytes, context: Any) -> bytes:
        receipt = pb.ReceiptRequest.FromString(request)
        return await self._single("Receipt", receipt, request, self.receipts, context)

    async def _single(
        self, name: str, item: Any, request: bytes, log: list[Report], context: Any
    ) -> bytes:
        if self._is_fenced(item.job_id, item.lease_token):
            self._record(log, item, grpc.StatusCode.FAILED_PRECONDITION)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _LEASE_LOST)
        try:
            reply, error = await self._upstream(_SERVICE + name, request, context)
        except asyncio.CancelledError:
            self._record(log, item, grpc.StatusCode.CANCELLED)
            raise
        self._record(log, item, grpc.StatusCode.OK if error is None else error.code())
        if error is not None:
            await _abort_with(context, error)
        assert reply is not None
        return bytes(reply)

    async def heartbeat_batch(self, request: bytes, context: Any) -> bytes:
        batch = pb.HeartbeatBatchRequest.FromString(request)
        reply = await self._batch(
            "HeartbeatBatch",
            list(batch.heartbeats),
            lambda items: pb.HeartbeatBatchRequest(heartbeats=items),
            pb.HeartbeatBatchResponse,
            pb.HeartbeatResult,
            self.heartbeats,
            context,
        )
        return bytes(reply.SerializeToString())

    async def receipt_batch(self, request: bytes, context: Any) -> bytes:
        batch = pb.ReceiptBatchRequest.FromString(request)
        reply = await self._batch(
            "ReceiptBatch",
            list(batch.receipts),
            lambda items: pb.ReceiptBatchRequest(receipts=items),
            pb.ReceiptBatchResponse,
            pb.ReceiptResult,
            self.receipts,
            context,
        )
        return bytes(reply.SerializeToString())

    async def _batch(
        self,
        name: str,
        items: list[Any],
        make_request: Callable[[list[Any]], Any],
        response_type: Any,
        result_type: Any,
        log: list[Report],
        context: Any,
    ) -> Any:
        """Forwards the items not fenced, answers the fenced ones itself, and keeps the
        reply's order."""
        fenced = [self._is_fenced(item.job_id, item.lease_token) for item in items]
        passed = [item for item, f in zip(items, fenced, strict=True) if not f]
        results: list[Any] = []
        if passed:
            try:
                raw, error = await self._upstream(
                    _SERVICE + name, make_request(passed).SerializeToString(), context
                )
            except asyncio.CancelledError:
                raw, error = None, None
            if raw is None:
                code = grpc.StatusCode.CANCELLED if error is None else error.code()
                for item in passed:
                    self._record(log, item, code)
                if error is None:
                    raise asyncio.CancelledError
                await _abort_with(context, error)
            assert raw is not None
            results = list(response_type.FromString(raw).results)
        merged = []
        forwarded = iter(results)
        for item, was_fenced in zip(items, fenced, strict=True):
            if was_fenced:
                result = result_type(
                    code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message=_LEASE_LOST
                )
            else:
                result = next(forwarded)
            self._record(log, item, _status_code(result.code))
            merged.append(result)
        return response_type(results=merged)

    def _record(self, log: list[Report], item: Any, code: grpc.StatusCode) -> None:
        outcome = getattr(item, "outcome", pb.OUTCOME_UNSPECIFIED)
        log.append(Report(time.monotonic(), item.job_id, item.lease_token, code, outcome))
        self._note()


async def _abort_with(context: Any, error: grpc.aio.AioRpcError) -> None:
    await context.abort(error.code(), error.details() or "")


def _status_code(number: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)


class _Poll:
    """A worker's long-poll, made of short upstream ones until a job comes, the worker's
    `wait` passes or the worker goes away."""

    def __init__(self, tap: WireTap, request: pb.LeaseRequest, until: float) -> None:
        self._tap, self._request, self._until = tap, request, until
        self._abandoned = False

    def abandon(self) -> None:
        self._abandoned = True

    async def run(self) -> pb.LeaseResponse:
        while True:
            remaining = self._until - time.monotonic()
            short = pb.LeaseRequest()
            short.CopyFrom(self._request)
            short.ClearField("wait")
            if remaining > 0:
                short.wait.FromTimedelta(timedelta(seconds=min(remaining, _SHORT_POLL)))
            reply = await self._tap.upstream_lease(short)
            if reply.jobs or remaining <= _SHORT_POLL or self._abandoned:
                return reply


def _unary(channel: grpc.aio.Channel, method: str) -> Any:
    """A call of `method` that takes and returns raw bytes."""
    return channel.unary_unary(method, None, None)


class _Handler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Routes every method of the service through the tap, as raw bytes."""

    def __init__(self, tap: WireTap) -> None:
        self._tap = tap
        self._special = {
            _SERVICE + "Lease": tap.lease,
            _SERVICE + "Heartbeat": tap.heartbeat,
            _SERVICE + "HeartbeatBatch": tap.heartbeat_batch,
            _SERVICE + "Receipt": tap.receipt,
            _SERVICE + "ReceiptBatch": tap.receipt_batch,
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method
        special = self._special.get(method)

        async def plain(request: bytes, context: Any) -> bytes:
            return await self._tap.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(special or plain)
