"""Authentication and authorization for every RPC: one Gate, used by the gRPC server
interceptor here and by the HTTP/JSON API (api/http/app.py) alike, so both transports apply
the same token store, roles, queue globs and limits.

The interceptor wraps each method's handler, so the check runs with the decoded request in
hand: it authenticates the bearer token (`authorization: Bearer cvy_...`), checks the method
against ALLOWED_ROLES and the queues the request names against the token's queue globs, then
applies the principal's limits (api/limits.py), and only then calls the servicer. The HTTP
API does the same with its Authorization header and the RPC its route calls.

Which RPCs are checked by queue (QUEUES_OF): Enqueue (job.queue), EnqueueBatch (every
jobs[].queue), Lease (queues), ListJobs (queue; an empty filter means every queue and is
checked as the queue name "*", so only a token whose globs match "*" may list all),
GetQueue (name), UpdateQueue (queue.name), CreateSchedule and UpdateSchedule
(schedule.job.queue). RPCs that name a job by id (GetJob, WaitJob, CancelJob, RetryJob,
Heartbeat, Receipt) cannot be checked here, before the job is read: the interceptor hands the
servicer the caller's Scope (its namespace and queue globs, api/caller.py), and core/scoped.py
answers a job outside it (another namespace, or a queue the globs do not match) with the
NOT_FOUND of a job that does not exist, before acting on it. Schedules named by name are
scoped the same way, by their job queue: GetSchedule, UpdateSchedule, PauseSchedule,
ResumeSchedule and DeleteSchedule answer one whose job queue the globs do not match with the
NOT_FOUND of a missing schedule, and change nothing (UpdateSchedule's check here covers only
the queue it moves a schedule to). ListQueues and ListSchedules name no queue: they return
only the queues, and the schedules whose job queue, the globs match, in full pages.

Status codes: a missing, malformed, unknown or revoked token is UNAUTHENTICATED; a role or queue
not granted is PERMISSION_DENIED; a limit is RESOURCE_EXHAUSTED with google.rpc.RetryInfo in
`grpc-status-details-bin`. Messages never quote a token."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from conveyor_server.api.caller import CALLER_SCOPE
from conveyor_server.api.limits import Exhausted, PrincipalLimits
from conveyor_server.core.auth import (
    PermissionDenied,
    Principal,
    Role,
    Unauthenticated,
    check,
    well_formed,
)
from conveyor_server.core.namespaces import Scope

log = structlog.get_logger("conveyor.auth")

SERVICE = pb.DESCRIPTOR.services_by_name["CoordinatorService"]
HEALTH_SERVICE = "grpc.health.v1.Health"

_P, _W, _A = Role.PRODUCER, Role.WORKER, Role.ADMIN
# Every CoordinatorService method and the roles that may call it; admin may call all of them.
# A method not listed here is refused to everyone (tests/auth checks the table against the
# service descriptor, so a new RPC must be added here before anyone can call it).
ALLOWED_ROLES: dict[str, frozenset[Role]] = {
    # Producers enqueue and follow (or take back) their jobs.
    "Enqueue": frozenset({_P, _A}),
    "EnqueueBatch": frozenset({_P, _A}),
    "GetJob": frozenset({_P, _A}),
    "WaitJob": frozenset({_P, _A}),
    "CancelJob": frozenset({_P, _A}),
    # Workers lease and report.
    "Lease": frozenset({_W, _A}),
    "Heartbeat": frozenset({_W, _A}),
    "HeartbeatBatch": frozenset({_W, _A}),
    "Receipt": frozenset({_W, _A}),
    "ReceiptBatch": frozenset({_W, _A}),
    # Reading contracts and the server's limits: anyone with a token.
    "GetServerInfo": frozenset({_P, _W, _A}),
    "GetTaskType": frozenset({_P, _W, _A}),
    "ListTaskTypes": frozenset({_P, _W, _A}),
    # Operating the coordinator: admin only (ListJobs shows every producer's jobs; RetryJob
    # re-runs someone else's work; queues, schedules and contracts change everyone's).
    "ListJobs": frozenset({_A}),
    "RetryJob": frozenset({_A}),
    "CreateSchedule": frozenset({_A}),
    "GetSchedule": frozenset({_A}),
    "ListSchedules": frozenset({_A}),
    "UpdateSchedule": frozenset({_A}),
    "DeleteSchedule": frozenset({_A}),
    "PauseSchedule": frozenset({_A}),
    "ResumeSchedule": frozenset({_A}),
    "GetQueue": frozenset({_A}),
    "ListQueues": frozenset({_A}),
    "UpdateQueue": frozenset({_A}),
    "RegisterTaskType": frozenset({_A}),
}

_EVERY_QUEUE = "*"
QUEUES_OF: dict[str, Callable[[Any], Iterable[str]]] = {
    "Enqueue": lambda r: (r.job.queue,),
    "EnqueueBatch": lambda r: dict.fromkeys(j.queue for j in r.jobs),
    "Lease": lambda r: r.queues,
    "ListJobs": lambda r: (r.queue or _EVERY_QUEUE,),
    "GetQueue": lambda r: (r.name,),
    "UpdateQueue": lambda r: (r.queue.name,),
    "CreateSchedule": lambda r: (r.schedule.job.queue,),
    "UpdateSchedule": lambda r: (r.schedule.job.queue,) if r.schedule.HasField("job") else (),
}


def _long_poll(method: str, request: Any) -> bool:
    if method == "WaitJob":
        return True
    return method == "Lease" and (request.wait.seconds > 0 or request.wait.nanos > 0)


def _enqueued(method: str, request: Any) -> int:
    if method == "Enqueue":
        return 1
    if method == "EnqueueBatch":
        return len(request.jobs)
    return 0


# A lookup (hit or miss) is trusted this long: a revoked token stops working within it on
# every coordinator sharing the database.
CACHE_SECONDS = 1.0
# Entries kept at most; past it the cache is cleared (a flood of distinct tokens cannot grow
# memory; each then costs one indexed lookup).
CACHE_ENTRIES = 10_000


class PrincipalCache:
    """Token -> principal, asking `lookup` (a blocking store call, run in a thread) at most
    once per token per CACHE_SECONDS; concurrent misses for one token share one lookup."""

    def __init__(
        self,
        lookup: Callable[[str], Principal | None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def get(self, token: str) -> Principal | None:
        now = self._monotonic()
        entry = self._entries.get(token)
        if entry is not None and now - entry[0] < CACHE_SECONDS:
            return entry[1]
        pending = self._pending.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            principal = await asyncio.to_thread(self._lookup, token)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._pending[token]
        future.set_result(principal)
        if len(self._entries) >= CACHE_ENTRIES:
            self._entries.clear()
        self._entries[token] = (now, principal)
        return principal


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The one well-formed bearer token in `metadata`, or Unauthenticated."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated("no token: send the metadata 'authorization: Bearer <token>'")
    if len(values) > 1:
        raise Unauthenticated("send exactly one authorization header")
    value = values[0]
    if not isinstance(value, str):
        raise Unauthenticated("the authorization header is not text")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("the authorization header must use the Bearer scheme")
    if not well_formed(token.strip()):
        raise Unauthenticated("the bearer token is malformed (tokens look like cvy_...)")
    return token.strip()


class TokenStoreUnavailable(Exception):
    """The token lookup failed (the database is unreachable): UNAVAILABLE, retry."""


class Gate:
    """The one check of a call: who (`principal`), whether it may (`authorize`), and its
    limits (`admit`). Shared by every transport so that a rule is written once."""

    def __init__(self, cache: PrincipalCache, limits: PrincipalLimits) -> None:
        self._cache = cache
        self._limits = limits

    async def principal(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        """The principal of the one bearer token among `metadata`'s `authorization` entries;
        Unauthenticated, or TokenStoreUnavailable when the lookup itself failed."""
        token = bearer_token(metadata)
        try:
            principal = await self._cache.get(token)
        except Exception as failed:
            log.exception("auth.lookup_failed")
            raise TokenStoreUnavailable("token store unavailable; retry") from failed
        if principal is None:
            raise Unauthenticated("unknown or revoked token")
        return principal

    @staticmethod
    def authorize(principal: Principal, method: str, request: Any) -> None:
        """PermissionDenied unless the principal's roles and queue globs cover `method` with
        `request` (None: a request that could not be decoded, checked by role only)."""
        queues = QUEUES_OF.get(method, lambda r: ())(request) if request is not None else ()
        check(principal, method, queues, ALLOWED_ROLES)

    def admit(
        self, principal: Principal, method: str, request: Any
    ) -> AbstractContextManager[None]:
        """Takes the call's share of the principal's limits (Exhausted when it has none
        left); the returned context holds a long-poll slot while the call runs."""
        if request is None:
            return nullcontext()
        self._limits.take_enqueue(principal.name, _enqueued(method, request))
        if _long_poll(method, request):
            return self._limits.long_poll(principal.name)
        return nullcontext()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """For one call: the servicer acts within the principal's namespace and queue globs
    (api/caller.py). Every transport (gRPC, HTTP/JSON) enters it, so none can act in the
    default namespace by forgetting to."""
    scope = CALLER_SCOPE.set(Scope(principal.namespace, principal.queues))
    try:
        yield
    finally:
        CALLER_SCOPE.reset(scope)


@dataclass(frozen=True)
class AuthSettings:
    # Whether the gRPC health service needs a token too (default: open, for probes).
    close_health: bool = False


def retry_trailers(message: str, retry_after: float) -> tuple[tuple[str, bytes], ...]:
    """google.rpc.Status with RetryInfo, as grpc-status's rich status sends it."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1_000_000, int(retry_after * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return (("grpc-status-details-bin", status.SerializeToString()),)


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # not subscriptable at run time
    _Interceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_Interceptor):
    def __init__(self, gate: Gate, settings: AuthSettings) -> None:
        self._gate = gate
        self._settings = settings

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.strip("/").partition("/")
        metadata = handler_call_details.invocation_metadata
        if service == SERVICE.full_name and handler.unary_unary is not None:
            return self._coordinator(handler, method, metadata)
        if service == HEALTH_SERVICE and not self._settings.close_health:
            return handler
        return self._any_principal(handler, metadata)

    async def _principal(
        self,
        metadata: Sequence[tuple[str, Any]] | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Principal:
        try:
            return await self._gate.principal(metadata)
        except Unauthenticated as refused:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(refused))
        except TokenStoreUnavailable as unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(unavailable))
        raise AssertionError("abort raises")

    def _coordinator(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        method: str,
        metadata: Sequence[tuple[str, Any]] | None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        behavior: Callable[[Any, Any], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
        gate = self._gate

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            principal = await self._principal(metadata, context)
            # An undecodable request is a marker, not a Message: the inner handler refuses it.
            decoded = request if isinstance(request, Message) else None
            try:
                gate.authorize(principal, method, decoded)
            except PermissionDenied as refused:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(refused))
            try:
                with gate.admit(principal, method, decoded), acting_as(principal):
                    return await behavior(request, context)
            except Exhausted as exhausted:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    str(exhausted),
                    trailing_metadata=retry_trailers(str(exhausted), exhausted.retry_after),
                )

        return handler._replace(unary_unary=unary_unary)  # type: ignore[attr-defined,no-any-return]

    def _any_principal(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        metadata: Sequence[tuple[str, Any]] | None,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Other services (reflection, a closed health service): any valid token."""
        inner: Any = handler  # the generated handler's behaviours vary by arity

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._principal(metadata, context)
            return await inner.unary_unary(request, context)

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._principal(metadata, context)
            behavior = inner.unary_stream or inner.stream_stream
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result

        async def stream_in(request: Any, context: Any) -> Any:
            await self._principal(metadata, context)
            return await inner.stream_unary(request, context)

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary)  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=streaming)  # type: ignore[attr-defined,no-any-return]
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=streaming)  # type: ignore[attr-defined,no-any-return]
        return handler._replace(stream_unary=stream_in)  # type: ignore[attr-defined,no-any-return]
