"""The HTTP/JSON API as a plain ASGI app. Each route (routes.py) calls the same
CoordinatorServicer method as gRPC does, through a small stand-in for the gRPC context, so
validation, the core call and the error mapping (api/errors.py) are shared; only the
transport differs. No framework: the routing table is built from the service descriptor,
and a framework's router and validation would be a second copy of it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import grpc
import structlog
from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf.message import Message

from conveyor_server.api.auth import Gate, TokenStoreUnavailable, acting_as
from conveyor_server.api.http import routes, transcode
from conveyor_server.api.http.openapi import openapi_document
from conveyor_server.api.limits import Exhausted
from conveyor_server.api.servicer import CoordinatorServicer
from conveyor_server.core.auth import PermissionDenied, Principal, Unauthenticated
from conveyor_server.errors import InvalidArgument, shown

log = structlog.get_logger("conveyor.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

OPENAPI_PATH = "/v1/openapi.json"
# Most bytes of a refused (413) body read and dropped before the connection is closed.
MAX_DRAIN_BYTES = 8 * 1024 * 1024
# Keys of a POST /v1/jobs body that belong to the schedule it creates (with `cron`) rather
# than to the JobSpec: every Schedule field but the template, in both JSON spellings.
_SCHEDULE_FIELDS = {
    name
    for field in pb.Schedule.DESCRIPTOR.fields
    if field.name != "job"
    for name in (field.name, field.json_name)
}


class _Aborted(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        http_status: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        details: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or transcode.HTTP_STATUS.get(code, 500)
        self.headers = headers or []
        self.details = details or []


class _Context:
    """What the servicer uses of grpc.aio.ServicerContext: abort, which raises; the caller's
    deadline (HTTP has none); and sending the headers before a Lease reply, which needs
    nothing here: a client that leaves cancels the servicer call itself (see
    _unless_disconnected), and that cancel hands the claimed jobs back."""

    def __init__(self, scope: Scope) -> None:
        self._headers = scope.get("headers", [])

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)

    def invocation_metadata(self) -> list[tuple[str, str]]:
        """The request headers the servicer reads as gRPC metadata: only `traceparent` (the
        others, credentials among them, stay out of its reach)."""
        return [
            ("traceparent", value.decode("latin-1"))
            for name, value in self._headers
            if name.lower() == b"traceparent"
        ]

    def time_remaining(self) -> float | None:
        return None

    async def send_initial_metadata(self, _metadata: object) -> None:
        return None


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client closed its connection before the reply: there is no one to answer."""


class HttpApi:
    """`gate`: with `--auth`, every route checks `Authorization: Bearer <token>` through the
    same Gate as the gRPC interceptor (api/auth.py): the RPC the route calls, its roles and
    queue globs, and the principal's limits. The OpenAPI document stays open (it is the
    API's shape, as public as the protos); unknown paths are 404 with or without a token."""

    def __init__(
        self, servicer: CoordinatorServicer, max_body_bytes: int, gate: Gate | None = None
    ) -> None:
        self._servicer = servicer
        self._max_body_bytes = max_body_bytes
        self._gate = gate
        document = openapi_document(max_body_bytes, bearer=gate is not None)
        self._openapi = json.dumps(document).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and _raw_path(scope) == OPENAPI_PATH:
            await _send(send, 200, self._openapi)
            return
        try:
            status, reply = await self._respond(scope, receive)
        except _ClientGone:
            return
        except _Aborted as aborted:
            reply = transcode.status_body(aborted.code, aborted.message)
            reply["details"] = aborted.details
            await _send_json(send, aborted.http_status, reply, aborted.headers)
            return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.error("http.failed", path=scope.get("path"), error=repr(error), exc_info=True)
            status = 500
            reply = transcode.status_body(
                grpc.StatusCode.INTERNAL, "internal error in the coordinator; see its log"
            )
        await _send_json(send, status, reply)

    async def _respond(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        verb, raw_path = scope["method"], _raw_path(scope)
        try:
            found = routes.find(verb, raw_path)
        except UnicodeDecodeError:
            raise _Aborted(
                grpc.StatusCode.INVALID_ARGUMENT, "the path is not UTF-8 once percent-decoded"
            ) from None
        if isinstance(found, list):
            if found:
                raise _Aborted(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{verb} is not allowed on this path; use {' or '.join(found)}",
                    http_status=405,
                )
            raise _Aborted(grpc.StatusCode.NOT_FOUND, f"no route for {verb} {shown(raw_path)}")
        route, path = found
        # Before the body is read: a caller without a token learns nothing of its request.
        principal = await self._principal(scope) if self._gate is not None else None
        try:
            raw = await _read_body(receive, scope, self._max_body_bytes)
        except _TooLarge:
            return 413, transcode.status_body(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body is larger than the limit of {self._max_body_bytes} bytes",
            )
        try:
            rpc, request = _request(route, path, scope, raw)
        except InvalidArgument as error:
            if principal is not None:
                # As over gRPC: the role decides before the request's content does.
                self._authorize(principal, route.rpc, None)
            raise _Aborted(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        slot: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        acting: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if principal is not None:
            slot, acting = self._authorize(principal, rpc, request), acting_as(principal)
        with slot, acting:
            reply = await _unless_disconnected(
                getattr(self._servicer, rpc)(request, _Context(scope)), receive
            )
        return 200, transcode.reply_json(reply)

    async def _principal(self, scope: Scope) -> Principal:
        assert self._gate is not None
        metadata = [
            ("authorization", value.decode("latin-1"))
            for name, value in scope.get("headers", [])
            if name.lower() == b"authorization"
        ]
        try:
            return await self._gate.principal(metadata)
        except Unauthenticated as refused:
            raise _Aborted(
                grpc.StatusCode.UNAUTHENTICATED,
                str(refused).replace("metadata", "header"),
                headers=[(b"www-authenticate", b'Bearer realm="conveyor"')],
            ) from None
        except TokenStoreUnavailable as unavailable:
            raise _Aborted(grpc.StatusCode.UNAVAILABLE, str(unavailable)) from None

    def _authorize(
        self, principal: Principal, rpc: str, request: Message | None
    ) -> contextlib.AbstractContextManager[None]:
        """The role and queue check, then the principal's limits (429 with Retry-After)."""
        assert self._gate is not None
        try:
            self._gate.authorize(principal, rpc, request)
            return self._gate.admit(principal, rpc, request)
        except PermissionDenied as refused:
            raise _Aborted(grpc.StatusCode.PERMISSION_DENIED, str(refused)) from None
        except Exhausted as exhausted:
            delay = max(0.001, exhausted.retry_after)
            raise _Aborted(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(exhausted),
                headers=[(b"retry-after", b"%d" % math.ceil(delay))],
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{delay:.3f}s",
                    }
                ],
            ) from None


async def _unless_disconnected(call: Awaitable[Message], receive: Receive) -> Message:
    """Runs the servicer call; a client that disconnects first cancels it, as a cancelled gRPC
    call does (so a long-polling Lease hands back jobs it was claiming, and no lease goes to a
    client that left)."""
    task = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise _ClientGone
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _request(
    route: routes.Route, path: dict[str, str], scope: Scope, raw: bytes
) -> tuple[str, Message]:
    try:
        query = parse_qsl(
            scope["query_string"].decode("utf-8"), keep_blank_values=True, errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidArgument("the query string is not UTF-8") from None
    body = transcode.parse_body(raw) if route.body is not None else None
    if route.body is None and raw.strip():
        raise InvalidArgument(f"{route.verb} {route.template} takes no request body")
    if route.rpc == "Enqueue":
        if query:
            raise InvalidArgument("POST /v1/jobs takes no query parameters")
        rpc, document = jobs_document(body or {})
        return rpc, transcode.parse(document, routes.SERVICE.methods_by_name[rpc].input_type)
    return route.rpc, transcode.build_request(route, path, query, body)


def jobs_document(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """POST /v1/jobs: a JobSpec, with `payload_json` for a payload that is itself JSON (stored
    as its UTF-8 text), and with `cron` a schedule (CreateSchedule) of that job instead."""
    job = dict(body)
    if "payload_json" in job:
        if "payload" in job:
            raise InvalidArgument("set payload (base64) or payload_json, not both")
        text = json.dumps(job.pop("payload_json"), separators=(",", ":"), ensure_ascii=False)
        job["payload"] = base64.b64encode(text.encode()).decode()
    schedule = {key: job.pop(key) for key in list(job) if key in _SCHEDULE_FIELDS}
    if not schedule:
        return "Enqueue", {"job": job}
    if "cron" not in schedule:
        raise InvalidArgument(
            f"{', '.join(sorted(schedule))} apply only to a schedule: add cron, or leave them out"
        )
    if not schedule.get("name"):
        # The same body names the same schedule: posting it twice is ALREADY_EXISTS, not a
        # second schedule firing the same job.
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        schedule["name"] = "job-" + hashlib.sha256(canonical).hexdigest()[:16]
    return "CreateSchedule", {"schedule": {**schedule, "job": job}}


async def _read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        await _drain(receive, declared)
        raise _TooLarge
    chunks, size = [], 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            break
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            if event.get("more_body", False):
                await _drain(receive, declared)
            raise _TooLarge
        chunks.append(chunk)
        if not event.get("more_body", False):
            break
    return b"".join(chunks)


async def _drain(receive: Receive, declared: int | None) -> None:
    """Reads and drops the rest of a refused body, so that closing the connection after the
    413 sends FIN, not RST (an RST can destroy the 413 before the client reads it). A body
    that is larger still than MAX_DRAIN_BYTES is cut off instead."""
    if declared is not None and declared > MAX_DRAIN_BYTES:
        return
    drained = 0
    while drained <= MAX_DRAIN_BYTES:
        event = await receive()
        if event["type"] == "http.disconnect" or not event.get("more_body", False):
            return
        drained += len(event.get("body", b""))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _raw_path(scope: Scope) -> str:
    """The path as sent, still percent-encoded (routes.py matches on it)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw.decode("latin-1")


async def _send_json(
    send: Send, status: int, reply: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()
    await _send(send, status, data, extra)


async def _send(
    send: Send, status: int, data: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    headers += extra or []
    if status == 413:
        # The rest of the body is not read: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
