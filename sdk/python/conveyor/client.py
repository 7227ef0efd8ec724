"""The producer and admin client: enqueue jobs, inspect and steer them, set queue limits and
schedules. `Client` is asyncio; `SyncClient` wraps it for plain code."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from conveyor import _auth, _contracts, _convert, _tracing
from conveyor.errors import JobCancelled, JobFailed, Unavailable, WaitTimeout, from_rpc_error
from conveyor.models import (
    EnqueueResult,
    Job,
    JobPage,
    JobSpec,
    JobState,
    MisfirePolicy,
    OverlapPolicy,
    Queue,
    RateLimit,
    RetryPolicy,
    Schedule,
    ServerInfo,
    TaskType,
    TaskTypePage,
)
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

T = TypeVar("T")
P = ParamSpec("P")
DEFAULT_ADDRESS = "127.0.0.1:7345"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Reconnect soon after a coordinator blip (a restart, a failover): gRPC's own default
    # backs off to 120 s, far longer than a lease, and heartbeats sent with wait_for_ready
    # wait for the reconnect. (Not grpc.min_reconnect_backoff_ms: gRPC uses it as the connect
    # timeout, and a short one fails handshakes on a busy machine.)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# WaitJob long-polls at most this long per call; longer waits loop.
_MAX_WAIT_PER_CALL = 300.0
# A WaitJob call may take this much longer than its long-poll before it is abandoned.
_WAIT_CALL_SLACK = 10.0


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The SDK's channel options, with the caller's winning where both set one."""
    merged = dict(_DEFAULT_CHANNEL_OPTIONS)
    merged.update(extra)
    return list(merged.items())


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
    *,
    token: str | None = None,
    tls_root_certificates: bytes | None = None,
) -> grpc.aio.Channel:
    """A channel to the coordinator: TLS with `credentials` (or trusting
    `tls_root_certificates`), else plaintext; `token` (else $CONVEYOR_TOKEN) on every call."""
    credentials = _auth.channel_credentials(credentials, tls_root_certificates)
    token = _auth.resolve_token(token)
    interceptors: Any = [_auth.BearerToken(token)] if token else None
    if credentials is None:
        return grpc.aio.insecure_channel(
            address, options=channel_options(options), interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        address, credentials, options=channel_options(options), interceptors=interceptors
    )


async def _call(call: Awaitable[T]) -> T:
    """Awaits a stub call, turning a gRPC status into the SDK's typed error."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None


class _Unset:
    """Marks an `update_queue` keyword that was not passed (None means 'clear')."""


@dataclasses.dataclass(frozen=True)
class EnqueueRetry:
    """How `enqueue` and `enqueue_batch` retry UNAVAILABLE (a coordinator restarting, say).

    They retry only when every job carries an idempotency key: without one, a call whose
    reply was lost may have stored the job, and sending it again would store a second copy.
    The pause before retry n is `initial_backoff * multiplier ** (n - 1)` seconds, capped at
    `max_backoff`, and cut by a random fraction of at most `jitter` so that producers cut off
    together do not come back in step. The defaults ride out about 8 to 16 s of absence."""

    max_attempts: int = 8  # calls in all, the first included; 1 = never retry
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be non-negative and the multiplier at least 1")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        full = min(self.initial_backoff * self.multiplier ** (retry - 1), self.max_backoff)
        return full * (1.0 - self.jitter * rng.random())


def _with_key(spec: JobSpec, auto: bool) -> JobSpec:
    """The spec, with a random idempotency key when it has none and `auto` asks for one."""
    if auto and not spec.idempotency_key:
        return dataclasses.replace(spec, idempotency_key=f"auto-{uuid.uuid4().hex}")
    return spec


class Client:
    """Async client. Use as `async with Client(address) as client:` or call `close()`.

    `timeout` bounds each call (seconds; None = no bound; WaitJob has its own). `token` is sent
    as a bearer token on every call (default: $CONVEYOR_TOKEN, if set). Pass `credentials`
    (grpc.ssl_channel_credentials(...), with a client certificate for mutual TLS) or just
    `tls_root_certificates` (PEM bytes of the CA to trust) for TLS, and `channel_options` for
    any other gRPC channel argument. Failed calls raise the ConveyorError subclass for their status
    (NotFound, InvalidArgument, ...) with the coordinator's message.

    `enqueue` and `enqueue_batch` retry UNAVAILABLE by `enqueue_retry`, but only for jobs with
    an idempotency key (see EnqueueRetry); `auto_idempotency_keys=True` gives every job
    without one a random key, so that every enqueue may be retried. No other call retries."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        auto_idempotency_keys: bool = False,
        enqueue_retry: EnqueueRetry = EnqueueRetry(),
        token: str | None = None,
        tls_root_certificates: bytes | None = None,
    ) -> None:
        self.address = address
        self._channel = open_channel(
            address,
            credentials,
            channel_options,
            token=token,
            tls_root_certificates=tls_root_certificates,
        )
        self._stub: rpc.CoordinatorServiceAsyncStub = rpc.CoordinatorServiceStub(self._channel)
        self._timeout = timeout
        self._auto_idempotency_keys = auto_idempotency_keys
        self._enqueue_retry = enqueue_retry
        self._rng = random.Random()  # nosec B311 # jitter of enqueue retry backoff, not a secret

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    # -- jobs --------------------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        task_type: str | Message,
        payload: bytes | str = b"",
        *,
        task_version: str | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        lease_duration: timedelta | float | None = None,
        retry_policy: RetryPolicy | None = None,
        idempotency_key: str | None = None,
        parent_job_id: str | None = None,
        throttle_key: str | None = None,
        auto_idempotency_key: bool | None = None,
    ) -> EnqueueResult:
        """Stores one job; returns once it is on the coordinator's disk. `delay` and
        `lease_duration` take seconds or a timedelta; None means the queue's default.
        `auto_idempotency_key` overrides the client's `auto_idempotency_keys` for this call.

        `task_type` is a name with `payload` as bytes (and `task_version` if the payload
        follows a versioned contract), or a generated message whose `(conveyor.v1.task)`
        option names the task type and version: `await client.enqueue("email", SendEmail(...))`.
        """
        task_type, task_version, body = _task_and_payload(task_type, payload, task_version)
        spec = JobSpec(
            queue=queue,
            task_type=task_type,
            task_version=task_version,
            payload=body,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_attempts=max_attempts,
            lease_duration=lease_duration,
            retry_policy=retry_policy,
            idempotency_key=idempotency_key,
            parent_job_id=parent_job_id,
            throttle_key=throttle_key,
        )
        auto = auto_idempotency_key
        if auto is None:
            auto = self._auto_idempotency_keys
        spec = _with_key(spec, auto)
        request = pb.EnqueueRequest(job=_convert.job_spec_pb(spec))
        reply = await self._retry_unavailable(
            lambda: self._stub.Enqueue(
                request, timeout=self._timeout, metadata=_tracing.enqueue_metadata()
            ),
            retry=bool(spec.idempotency_key),
        )
        return _convert.enqueue_result(reply)

    async def enqueue_batch(
        self, specs: Sequence[JobSpec], *, auto_idempotency_keys: bool | None = None
    ) -> list[EnqueueResult]:
        """Stores several jobs in one transaction: all of them, or none and an error.
        `auto_idempotency_keys` overrides the client's for this call."""
        auto = auto_idempotency_keys
        if auto is None:
            auto = self._auto_idempotency_keys
        keyed = [_with_key(spec, auto) for spec in specs]
        request = pb.EnqueueBatchRequest(jobs=[_convert.job_spec_pb(s) for s in keyed])
        reply = await self._retry_unavailable(
            lambda: self._stub.EnqueueBatch(
                request, timeout=self._timeout, metadata=_tracing.enqueue_metadata()
            ),
            retry=all(spec.idempotency_key for spec in keyed),
        )
        return [_convert.enqueue_result(r) for r in reply.results]

    async def _retry_unavailable(self, call: Callable[[], Awaitable[T]], *, retry: bool) -> T:
        """Makes the call; while it fails with UNAVAILABLE and `retry` (the request is safe to
        repeat), waits by `enqueue_retry` and makes it again."""
        attempts = self._enqueue_retry.max_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return await _call(call())
            except Unavailable:
                if attempt == attempts:
                    raise
            await asyncio.sleep(self._enqueue_retry.backoff(attempt, self._rng))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get_job(self, job_id: str) -> Job:
        reply = await _call(
            self._stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self._timeout)
        )
        return _convert.job(reply)

    async def list_jobs(
        self,
        queue: str | None = None,
        state: JobState | None = None,
        *,
        page_size: int = 50,
        page_token: str = "",
        full: bool = False,
    ) -> JobPage:
        """One page of jobs, newest first (None = any queue, any state). Pass the page's
        `next_page_token` back for the next page; it is "" on the last one. Jobs come without
        payload, result and checkpoint unless `full`; a page of large jobs may hold fewer than
        `page_size` (with a token for the rest)."""
        request = pb.ListJobsRequest(
            queue=queue or "",
            state=int(state or 0),  # type: ignore[arg-type]
            page_size=page_size,
            page_token=page_token,
            view=pb.JOB_VIEW_FULL if full else pb.JOB_VIEW_BASIC,
        )
        return _convert.job_page(await _call(self._stub.ListJobs(request, timeout=self._timeout)))

    async def iter_jobs(
        self, queue: str | None = None, state: JobState | None = None, *, page_size: int = 500
    ) -> AsyncIterator[Job]:
        """Every matching job, newest first, fetching page after page as it goes."""
        token = ""  # nosec B105 # a page cursor, not a secret
        while True:
            page = await self.list_jobs(queue, state, page_size=page_size, page_token=token)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def server_info(self) -> ServerInfo:
        """The coordinator's limits (payload, result and checkpoint sizes, message size, ...)
        and version."""
        reply = await _call(
            self._stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=self._timeout)
        )
        return _convert.server_info(reply)

    async def cancel_job(self, job_id: str) -> Job:
        """Cancels a job that is waiting at once; a running one is asked to stop (its worker
        sees it at the next heartbeat) and ends CANCELLED when the worker reports."""
        request = pb.CancelJobRequest(job_id=job_id)
        return _convert.job(await _call(self._stub.CancelJob(request, timeout=self._timeout)))

    async def retry_job(self, job_id: str) -> Job:
        """Replays a FAILED or CANCELLED job with a fresh attempt budget."""
        request = pb.RetryJobRequest(job_id=job_id)
        return _convert.job(await _call(self._stub.RetryJob(request, timeout=self._timeout)))

    async def wait_job(self, job_id: str, timeout: timedelta | float = 30.0) -> Job:
        """The job once it is terminal (SUCCEEDED, FAILED or CANCELLED), or as it is when
        `timeout` (at most 300 s per call) passes: check `job.state.is_terminal`."""
        seconds = _convert.seconds_of(timeout)
        request = pb.WaitJobRequest(job_id=job_id, timeout=_convert.duration(seconds))
        call = self._stub.WaitJob(request, timeout=seconds + _WAIT_CALL_SLACK)
        return _convert.job(await _call(call))

    async def wait_for_result(self, job_id: str, timeout: timedelta | float | None = None) -> bytes:
        """The job's result once it SUCCEEDED. Raises JobFailed (dead-lettered) or JobCancelled,
        or WaitTimeout (a TimeoutError) when `timeout` passes first; None waits as long as it
        takes."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + _convert.seconds_of(timeout)
        while True:
            remaining = _MAX_WAIT_PER_CALL
            if deadline is not None:
                remaining = max(0.0, min(remaining, deadline - loop.time()))
            job = await self.wait_job(job_id, remaining)
            if job.state == JobState.SUCCEEDED:
                return job.result
            if job.state == JobState.FAILED:
                raise JobFailed(job)
            if job.state == JobState.CANCELLED:
                raise JobCancelled(job)
            if deadline is not None and loop.time() >= deadline:
                raise WaitTimeout(job)

    # -- task contracts ----------------------------------------------------------------------

    async def register_task_type(
        self,
        message_class: type[Message],
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> TaskType:
        """Publishes one version of a task contract: the message class's name and version
        (from its `(conveyor.v1.task)` option, unless `name` / `version` are given) with the
        descriptors of its file and every file that imports. Registering the same version
        again with the same message is harmless; a different message is AlreadyExists."""
        if name is None or version is None:
            contract = _contracts.contract_of(message_class)
            name = contract.name if name is None else name
            version = contract.version if version is None else version
        _contracts.Version.parse(version)
        request = pb.RegisterTaskTypeRequest(
            name=name,
            version=version,
            message_type=message_class.DESCRIPTOR.full_name,
            descriptors=_contracts.descriptor_set(message_class),
        )
        reply = await _call(self._stub.RegisterTaskType(request, timeout=self._timeout))
        return _convert.task_type(reply)

    async def get_task_type(self, name: str, version: str = "") -> TaskType:
        """One registered version of a task type; "" is the highest registered."""
        request = pb.GetTaskTypeRequest(name=name, version=version)
        return _convert.task_type(
            await _call(self._stub.GetTaskType(request, timeout=self._timeout))
        )

    async def list_task_types(self, *, page_size: int = 100, page_token: str = "") -> TaskTypePage:
        """One page of registered versions, by name then version."""
        request = pb.ListTaskTypesRequest(page_size=page_size, page_token=page_token)
        return _convert.task_type_page(
            await _call(self._stub.ListTaskTypes(request, timeout=self._timeout))
        )

    # -- queues ------------------------------------------------------------------------------

    async def get_queue(self, name: str) -> Queue:
        reply = await _call(
            self._stub.GetQueue(pb.GetQueueRequest(name=name), timeout=self._timeout)
        )
        return _convert.queue(reply)

    async def list_queues(
        self, *, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[Queue], str]:
        request = pb.ListQueuesRequest(page_size=page_size, page_token=page_token)
        reply = await _call(self._stub.ListQueues(request, timeout=self._timeout))
        return [_convert.queue(q) for q in reply.queues], reply.next_page_token

    async def update_queue(
        self,
        name: str,
        *,
        rate_limit: RateLimit | type[_Unset] | None = _Unset,
        per_key_rate_limit: RateLimit | type[_Unset] | None = _Unset,
        max_concurrency: int | type[_Unset] = _Unset,
        paused: bool | type[_Unset] = _Unset,
        retry_policy: RetryPolicy | type[_Unset] = _Unset,
        lease_duration: timedelta | float | type[_Unset] | None = _Unset,
        max_attempts: int | type[_Unset] | None = _Unset,
        retention: dict[str, timedelta | float] | type[_Unset] = _Unset,
        strict_task_types: bool | type[_Unset] = _Unset,
    ) -> Queue:
        """Sets only the settings passed (None clears a limit or default). `retention` maps
        "succeeded", "failed" and "cancelled" to how long such jobs are kept."""
        message = pb.Queue(name=name)
        paths: list[str] = []
        if rate_limit is not _Unset:
            message.rate_limit.CopyFrom(_convert.rate_limit_pb(rate_limit))  # type: ignore[arg-type]
            paths.append("rate_limit")
        if per_key_rate_limit is not _Unset:
            message.per_key_rate_limit.CopyFrom(_convert.rate_limit_pb(per_key_rate_limit))  # type: ignore[arg-type]
            paths.append("per_key_rate_limit")
        if max_concurrency is not _Unset:
            message.max_concurrency = max_concurrency  # type: ignore[assignment]
            paths.append("max_concurrency")
        if paused is not _Unset:
            message.paused = paused  # type: ignore[assignment]
            paths.append("paused")
        if retry_policy is not _Unset:
            message.retry_policy.CopyFrom(_convert.retry_policy_pb(retry_policy))  # type: ignore[arg-type]
            paths.append("retry_policy")
        if lease_duration is not _Unset:
            if lease_duration is not None:
                message.lease_duration.CopyFrom(_convert.duration(lease_duration))  # type: ignore[arg-type]
            paths.append("lease_duration")
        if max_attempts is not _Unset:
            message.max_attempts = max_attempts or 0  # type: ignore[assignment]
            paths.append("max_attempts")
        if retention is not _Unset:
            for state, keep in retention.items():  # type: ignore[union-attr]
                getattr(message.retention, state).CopyFrom(_convert.duration(keep))
            paths.append("retention")
        if strict_task_types is not _Unset:
            message.strict_task_types = strict_task_types  # type: ignore[assignment]
            paths.append("strict_task_types")
        request = pb.UpdateQueueRequest(queue=message, update_mask=FieldMask(paths=paths))
        return _convert.queue(await _call(self._stub.UpdateQueue(request, timeout=self._timeout)))

    async def pause_queue(self, name: str) -> Queue:
        return await self.update_queue(name, paused=True)

    async def resume_queue(self, name: str) -> Queue:
        return await self.update_queue(name, paused=False)

    # -- schedules ---------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        cron: str,
        job: JobSpec,
        *,
        timezone: str = "UTC",
        misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        catch_up_limit: int = 0,
        overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW,
        paused: bool = False,
    ) -> Schedule:
        """A recurring job. `cron` has 5 fields, or 6 with seconds first."""
        message = pb.Schedule(
            name=name,
            cron=cron,
            timezone=timezone,
            job=_convert.job_spec_pb(job),
            misfire_policy=int(misfire_policy),  # type: ignore[arg-type]
            catch_up_limit=catch_up_limit,
            overlap_policy=int(overlap_policy),  # type: ignore[arg-type]
            paused=paused,
        )
        request = pb.CreateScheduleRequest(schedule=message)
        return _convert.schedule(
            await _call(self._stub.CreateSchedule(request, timeout=self._timeout))
        )

    async def get_schedule(self, name: str) -> Schedule:
        request = pb.GetScheduleRequest(name=name)
        return _convert.schedule(
            await _call(self._stub.GetSchedule(request, timeout=self._timeout))
        )

    async def list_schedules(
        self, *, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[Schedule], str]:
        request = pb.ListSchedulesRequest(page_size=page_size, page_token=page_token)
        reply = await _call(self._stub.ListSchedules(request, timeout=self._timeout))
        return [_convert.schedule(s) for s in reply.schedules], reply.next_page_token

    async def update_schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        job: JobSpec | None = None,
        misfire_policy: MisfirePolicy | None = None,
        catch_up_limit: int | None = None,
        overlap_policy: OverlapPolicy | None = None,
        paused: bool | None = None,
    ) -> Schedule:
        """Changes only the settings passed (None leaves one as it is)."""
        message = pb.Schedule(name=name)
        paths: list[str] = []
        if job is not None:
            message.job.CopyFrom(_convert.job_spec_pb(job))
            paths.append("job")
        for field, value in (
            ("cron", cron),
            ("timezone", timezone),
            ("misfire_policy", None if misfire_policy is None else int(misfire_policy)),
            ("catch_up_limit", catch_up_limit),
            ("overlap_policy", None if overlap_policy is None else int(overlap_policy)),
            ("paused", paused),
        ):
            if value is not None:
                setattr(message, field, value)
                paths.append(field)
        request = pb.UpdateScheduleRequest(schedule=message, update_mask=FieldMask(paths=paths))
        return _convert.schedule(
            await _call(self._stub.UpdateSchedule(request, timeout=self._timeout))
        )

    async def delete_schedule(self, name: str) -> None:
        request = pb.DeleteScheduleRequest(name=name)
        await _call(self._stub.DeleteSchedule(request, timeout=self._timeout))

    async def pause_schedule(self, name: str) -> Schedule:
        request = pb.PauseScheduleRequest(name=name)
        return _convert.schedule(
            await _call(self._stub.PauseSchedule(request, timeout=self._timeout))
        )

    async def resume_schedule(self, name: str) -> Schedule:
        request = pb.ResumeScheduleRequest(name=name)
        return _convert.schedule(
            await _call(self._stub.ResumeSchedule(request, timeout=self._timeout))
        )


def _task_and_payload(
    task: str | Message, payload: bytes | str, task_version: str | None
) -> tuple[str, str | None, bytes]:
    """The task type, version and payload bytes of `enqueue`'s arguments."""
    if isinstance(task, str):
        return task, task_version, payload.encode() if isinstance(payload, str) else payload
    if payload:
        raise TypeError("enqueue(queue, message) takes the payload from the message; pass no more")
    contract = _contracts.contract_of(type(task))
    if task_version is not None and task_version != contract.version:
        raise ValueError(
            f"task_version={task_version!r} contradicts the message's option "
            f"({contract.version}); leave it out"
        )
    return contract.name, contract.version, task.SerializeToString()


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """A SyncClient method that runs the Client method of the same name on the private loop."""

    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    functools.update_wrapper(call, method)
    return call


class SyncClient:
    """The same calls as `Client`, blocking, for code without an event loop:

        with SyncClient("127.0.0.1:7345") as client:
            job = client.enqueue("email", "send_welcome", b"ada@example.com")
            print(client.wait_for_result(job.job_id, timeout=30))

    It runs a private event loop in a daemon thread for its whole life (rather than
    asyncio.run per call), so the gRPC channel and its connection are made once and reused,
    and it also works from a thread of an async program. It is safe to share between threads.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        auto_idempotency_keys: bool = False,
        enqueue_retry: EnqueueRetry = EnqueueRetry(),
        token: str | None = None,
        tls_root_certificates: bytes | None = None,
    ) -> None:
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="conveyor-sync-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def make() -> Client:  # grpc.aio channels belong to the loop they are made on
            return Client(
                address,
                timeout=timeout,
                credentials=credentials,
                channel_options=channel_options,
                auto_idempotency_keys=auto_idempotency_keys,
                enqueue_retry=enqueue_retry,
                token=token,
                tls_root_certificates=tls_root_certificates,
            )

        self._client = self._run(make())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("this SyncClient is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel and stops the private loop; safe to call twice."""
        if self._closed:
            return
        self._run(self._client.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    enqueue = _blocking(Client.enqueue)
    enqueue_batch = _blocking(Client.enqueue_batch)
    get_job = _blocking(Client.get_job)
    list_jobs = _blocking(Client.list_jobs)
    server_info = _blocking(Client.server_info)
    cancel_job = _blocking(Client.cancel_job)
    retry_job = _blocking(Client.retry_job)
    wait_job = _blocking(Client.wait_job)
    wait_for_result = _blocking(Client.wait_for_result)
    get_queue = _blocking(Client.get_queue)
    list_queues = _blocking(Client.list_queues)
    update_queue = _blocking(Client.update_queue)
    pause_queue = _blocking(Client.pause_queue)
    resume_queue = _blocking(Client.resume_queue)
    create_schedule = _blocking(Client.create_schedule)
    get_schedule = _blocking(Client.get_schedule)
    list_schedules = _blocking(Client.list_schedules)
    update_schedule = _blocking(Client.update_schedule)
    delete_schedule = _blocking(Client.delete_schedule)
    pause_schedule = _blocking(Client.pause_schedule)
    resume_schedule = _blocking(Client.resume_schedule)
    register_task_type = _blocking(Client.register_task_type)
    get_task_type = _blocking(Client.get_task_type)
    list_task_types = _blocking(Client.list_task_types)

    def iter_jobs(
        self, queue: str | None = None, state: JobState | None = None, *, page_size: int = 500
    ) -> Iterator[Job]:
        """Every matching job, newest first, fetching page after page as it goes."""
        token = ""  # nosec B105 # a page cursor, not a secret
        while True:
            page = self.list_jobs(queue, state, page_size=page_size, page_token=token)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return
