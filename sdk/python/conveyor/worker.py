"""The worker: leases jobs, runs their handlers, heartbeats, reports.

Phases, each a small named piece:
  lease loop   `_lease_loop` asks for exactly as many jobs as there are free slots (one
               long-poll at a time) and starts each one;
  execute      `_execute` runs one handler (under its timeout, if it has one) and turns what
               it returned or raised into a receipt;
  report       `Receipts` (conveyor/_receipts.py) coalesces receipts into ReceiptBatch calls;
  heartbeat    `Heartbeats` (conveyor/_heartbeats.py), a monitored side task, extends leases
               at a third of each job's lease duration and carries the newest checkpoint.
Shutdown has two phases: stop leasing and let running jobs finish within `shutdown_grace`
(still heartbeating them); then cancel the rest and hand them back (OUTCOME_RELEASE). Pending
receipts are flushed before `run()` returns.

Delivery is at-least-once: a handler may run again for a job whose receipt never arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from conveyor import _auth, _convert, _outcome, _tracing
from conveyor._contracts import Contract, Version, contract_of, decode
from conveyor._heartbeats import Heartbeats
from conveyor._receipts import Receipts
from conveyor._running import RunningJob, StopReason, heartbeat_interval, job_context
from conveyor.client import DEFAULT_ADDRESS, open_channel
from conveyor.context import JobContext, Retry
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

log = logging.getLogger("conveyor.worker")

Handler = Callable[[JobContext], Any]
H = TypeVar("H", bound=Handler)

_LEASE_BACKOFF_FIRST = 0.1
_LEASE_BACKOFF_MAX = 5.0
# A Lease call may take this much longer than its long-poll before the worker gives up on it.
_LEASE_CALL_SLACK = 10.0
# On stop(), how long a Lease call in flight may still bring its reply before it is cancelled.
_LEASE_DRAIN = 0.2


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass
class WorkerConfig:
    """Tuning for a Worker; the defaults suit most uses."""

    # Jobs run at once; the worker never leases more than its free slots.
    concurrency: int = 10
    # Names this process in the coordinator's records (default: host-pid-random).
    worker_id: str = field(default_factory=_default_worker_id)
    # How long running jobs may finish after stop() before they are cancelled and released.
    shutdown_grace: float = 30.0
    # How long one Lease call long-polls for work (the coordinator allows at most 30 s).
    lease_wait: float = 20.0
    # Heartbeat each job after this fraction of its lease duration.
    heartbeat_fraction: float = 1 / 3
    # Receipts wait at most this long, or until this many are pending, before being sent.
    receipt_flush_interval: float = 0.002
    receipt_batch_size: int = 100
    # For how long a batch of receipts is retried while the coordinator is unreachable.
    receipt_retry_for: float = 30.0
    # Name the registered task types (and contract versions) in every Lease, so that the
    # coordinator hands this worker only jobs it has a handler for. Off: any job of the queues.
    declare_task_types: bool = True
    # Lease confirmation: every Lease asks the coordinator to hold its jobs unconfirmed, and
    # the worker confirms each reply at once with one HeartbeatBatch before running its jobs.
    # A reply lost on the way (a long-poll cancelled as it was sent) then costs its jobs
    # only confirm_within, never an attempt. Off: leases run unconfirmed (coordinators older
    # than lease confirmation ignore the request's field, and the confirmation is harmless).
    confirm_leases: bool = True
    # How long the coordinator waits for that confirmation (at most each job's lease).
    confirm_within: float = 10.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0 < self.lease_wait <= 30:
            raise ValueError(
                f"lease_wait must be more than 0 and at most 30 s, got {self.lease_wait}"
            )
        if not 0 < self.heartbeat_fraction < 1:
            raise ValueError("heartbeat_fraction must be between 0 and 1 (a third is usual)")
        if self.shutdown_grace < 0:
            raise ValueError("shutdown_grace must not be negative")
        if self.receipt_batch_size < 1:
            raise ValueError("receipt_batch_size must be at least 1")
        if not 0.001 <= self.confirm_within <= 86400:
            raise ValueError("confirm_within must be between 1 ms and 24 h (10 s is usual)")


@dataclass(frozen=True)
class _Task:
    """A registered handler and how to run it."""

    handler: Handler
    is_async: bool
    timeout: float | None
    non_retryable: tuple[type[BaseException], ...]
    # The contract version it implements; None: every version of its task type.
    version: str | None = None
    # Set for a handler registered with a message class: its payload is decoded into it.
    contract: Contract | None = None

    @property
    def major(self) -> int | None:
        return None if self.version is None else Version.parse(self.version).major

    def ref(self, name: str) -> pb.TaskTypeRef:
        """How a Lease names this handler: an unversioned one takes every version."""
        return pb.TaskTypeRef(name=name, version=self.version or "")


class Worker:
    """Runs handlers for the task types registered with `@worker.task("name")`.

    A handler takes a JobContext and returns bytes, str (sent as UTF-8) or None: the job's
    result. Raise `Retry(after=...)` to try again later, `NonRetryableError` (or an exception
    with `non_retryable = True`) to fail for good, anything else to fail and be retried by the
    job's policy. `async def` handlers run on the event loop; plain `def` handlers run in
    threads (asyncio.to_thread), so keep `concurrency` within the default thread pool's size
    (min(32, cpus + 4)) when they block.

        worker = Worker("127.0.0.1:7345", ["email"], concurrency=50)

        @worker.task("send_welcome")
        async def send_welcome(job: JobContext) -> bytes: ...

        await worker.run(install_signal_handlers=True)
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        queues: Sequence[str] = ("default",),
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        shutdown_grace: float | timedelta | None = None,
        config: WorkerConfig | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
        tls_root_certificates: bytes | None = None,
    ) -> None:
        self.config = _merge_config(config, concurrency, worker_id, shutdown_grace)
        if isinstance(queues, str) or not queues:
            raise ValueError("queues must be a non-empty list of queue names")
        self.address = address
        self.queues = list(queues)
        self._credentials = _auth.channel_credentials(credentials, tls_root_certificates)
        self._channel_options = channel_options
        # Resolved now, so a bad $CONVEYOR_TOKEN fails at construction, not in run().
        self._token = _auth.resolve_token(token)
        # Per task type, one handler, or one per major version (highest first).
        self._tasks: dict[str, list[_Task]] = {}
        # Keyed by lease token: after a lost lease the same job may be leased here again
        # while the abandoned attempt is still winding down.
        self._running: dict[str, RunningJob] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._started = False
        # Per-run state, made in run() on the loop that uses it.
        self._wake_lease_loop = asyncio.Event()
        self._stopping = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._receipts: Receipts | None = None
        self._heartbeats: Heartbeats | None = None
        # Jobs whose handler returned or raised (not those released or lost), for monitoring.
        self.processed = 0

    # -- registration ------------------------------------------------------------------------

    def task(
        self,
        task_type: str | type[Message],
        *,
        version: str | None = None,
        timeout: float | timedelta | None = None,
        non_retryable: Sequence[type[BaseException]] = (),
    ) -> Callable[[H], H]:
        """Registers the decorated function as the handler of `task_type`. `timeout` fails an
        attempt that runs longer (retryably); `non_retryable` names exception classes that
        fail the job for good.

        `task_type` is a name, or a generated message class whose `(conveyor.v1.task)` option
        names the task type and version: the handler then gets `job.message`, the payload
        decoded as that class (a payload that does not decode fails the job for good). Several
        message classes of one task type may be registered, one per MAJOR version: a job goes
        to the handler of its task_version's major (a job without a version, to the highest).
        A handler registered by name may still name the `version` of the contract it
        implements (for payloads that are not protobuf), with the same routing.
        """

        def register(handler: H) -> H:
            self.register(
                task_type, handler, version=version, timeout=timeout, non_retryable=non_retryable
            )
            return handler

        return register

    def register(
        self,
        task_type: str | type[Message],
        handler: Handler,
        *,
        version: str | None = None,
        timeout: float | timedelta | None = None,
        non_retryable: Sequence[type[BaseException]] = (),
    ) -> None:
        contract = None
        if isinstance(task_type, str):
            name = task_type
        else:
            contract = contract_of(task_type)
            if version is not None:
                raise ValueError("the version of a message class comes from its task option")
            name, version = contract.name, contract.version
        if version is not None:
            Version.parse(version)  # refuse a malformed version now, not at the first job
        task = _Task(
            handler=handler,
            is_async=_outcome.is_async_handler(handler),
            timeout=None if timeout is None else _convert.seconds_of(timeout),
            non_retryable=tuple(non_retryable),
            version=version,
            contract=contract,
        )
        existing = self._tasks.get(name, [])
        for other in existing:
            if other.version is None or version is None:
                raise ValueError(f"task type {name!r} already has a handler")
            if other.major == task.major:
                raise ValueError(
                    f"task type {name!r} already has a handler for major version {task.major} "
                    f"({other.version}); register one handler per major version"
                )
        # Highest major first: a job without a task_version goes to the newest contract.
        self._tasks[name] = sorted([*existing, task], key=lambda t: t.major or 0, reverse=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops leasing and begins the graceful shutdown; returns at once. Safe to call more
        than once, before run(), and from any thread or a signal handler."""
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._begin_stopping()
        else:
            loop.call_soon_threadsafe(self._begin_stopping)

    def _begin_stopping(self) -> None:
        if not self._stopping.is_set():
            log.info("worker %s stopping", self.config.worker_id)
        self._stopping.set()
        self._wake_lease_loop.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Works until stop() is called (or SIGTERM/SIGINT arrives, when
        `install_signal_handlers` is true), then shuts down gracefully. A Worker runs once."""
        self._prepare_run()
        channel = open_channel(
            self.address, self._credentials, self._channel_options, token=self._token
        )
        try:
            async with channel:
                await self._work(rpc.CoordinatorServiceStub(channel), install_signal_handlers)
        finally:
            if self._executor is not None:
                # Threads of handlers cut short at shutdown finish on their own.
                self._executor.shutdown(wait=False, cancel_futures=True)

    def _prepare_run(self) -> None:
        if not self._tasks:
            raise ValueError("register at least one handler with @worker.task(...) first")
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._wake_lease_loop = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        if any(not task.is_async for tasks in self._tasks.values() for task in tasks):
            # Sync handlers get a pool of their own, one thread per slot, so that they never
            # queue behind each other (or behind other users of the default executor).
            self._executor = ThreadPoolExecutor(
                self.config.concurrency, thread_name_prefix="conveyor-handler"
            )

    async def _work(self, stub: rpc.CoordinatorServiceAsyncStub, signals: bool) -> None:
        config = self.config
        receipts = Receipts(
            stub,
            flush_interval=config.receipt_flush_interval,
            batch_size=config.receipt_batch_size,
            retry_for=config.receipt_retry_for,
        )
        heartbeats = Heartbeats(
            stub,
            self._running,
            on_cancel_requested=self._cancel_requested,
            on_lease_lost=self._lease_lost,
        )
        self._receipts, self._heartbeats = receipts, heartbeats
        sender = self._side_task(receipts.run, "conveyor-receipts")
        beater = self._side_task(heartbeats.run, "conveyor-heartbeats")
        log.info("worker %s leasing from %s", config.worker_id, ", ".join(self.queues))
        try:
            with self._signal_handlers(signals):
                await self._lease_loop(stub)
                await self._finish_running(config.shutdown_grace)
        finally:
            await self._finish_running(0.0)  # run() itself was cancelled, or failed
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
            receipts.close()
            await sender
            log.info("worker %s stopped", config.worker_id)

    def _side_task(self, work: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
        """A background task that, should it fail, stops the worker rather than dying quietly."""

        async def monitored() -> None:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; stopping the worker", name)
                self.stop()

        return asyncio.create_task(monitored(), name=name)

    @contextlib.contextmanager
    def _signal_handlers(self, install: bool) -> Iterator[None]:
        assert self._loop is not None
        loop = self._loop
        installed: list[signal.Signals] = []
        if install:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    # -- lease loop --------------------------------------------------------------------------

    async def _lease_loop(self, stub: rpc.CoordinatorServiceAsyncStub) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        backoff = _LEASE_BACKOFF_FIRST
        try:
            while not self._stopping.is_set():
                free = self.config.concurrency - len(self._running)
                if free <= 0:
                    await self._wait_for_free_slot()
                    continue
                try:
                    jobs = await self._lease(stub, free, stopping)
                except grpc.aio.AioRpcError as error:
                    log.warning(
                        "lease failed (%s: %s); retrying in %.1fs",
                        error.code().name,
                        error.details(),
                        backoff,
                    )
                    await self._sleep_unless_stopping(backoff)
                    backoff = min(backoff * 2, _LEASE_BACKOFF_MAX)
                    continue
                backoff = _LEASE_BACKOFF_FIRST
                for job in jobs:
                    self._start(job)
                if jobs:
                    # Let handlers that finish at once free their slots before the next
                    # Lease, so that it asks for them all in one call.
                    await asyncio.sleep(0)
        finally:
            stopping.cancel()

    async def _wait_for_free_slot(self) -> None:
        self._wake_lease_loop.clear()
        if len(self._running) >= self.config.concurrency and not self._stopping.is_set():
            await self._wake_lease_loop.wait()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _lease(
        self, stub: rpc.CoordinatorServiceAsyncStub, free: int, stopping: asyncio.Future[Any]
    ) -> Sequence[pb.LeasedJob]:
        """Up to `free` jobs; none if stop() came first. stop() cuts the long-poll short."""
        request = pb.LeaseRequest(
            worker_id=self.config.worker_id,
            queues=self.queues,
            max_jobs=free,
            wait=_convert.duration(self.config.lease_wait),
            task_types=self._declared_task_types(),
        )
        if self.config.confirm_leases:
            request.confirm = True
            request.confirm_within.CopyFrom(_convert.duration(self.config.confirm_within))
        call = stub.Lease(request, timeout=self.config.lease_wait + _LEASE_CALL_SLACK)
        lease: asyncio.Future[pb.LeaseResponse] = asyncio.ensure_future(call)
        await asyncio.wait((lease, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not lease.done():
            # A short drain first: cancelling a call whose reply is already on the wire loses
            # the reply (the coordinator sent it, the channel drops it), and its jobs stay
            # leased to nobody until their leases run out.
            await asyncio.wait((lease,), timeout=_LEASE_DRAIN)
        if not lease.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await lease
        if lease.cancelled() or lease.exception() is not None:
            if self._stopping.is_set():
                return ()
            lease.result()  # raises the AioRpcError
        jobs: Sequence[pb.LeasedJob] = lease.result().jobs
        if jobs and self.config.confirm_leases and not self._stopping.is_set():
            assert self._heartbeats is not None
            confirmation = await self._heartbeats.confirm(jobs, self.config.confirm_within)
            for job in confirmation.cancel_requested:
                self._report_cancelled_before_start(job)
            jobs = confirmation.to_run
        if self._stopping.is_set():
            # The reply raced stop(): hand these back unstarted, without counting an attempt.
            for job in jobs:
                self._send_receipt(_receipt(job, pb.OUTCOME_RELEASE))
            return ()
        return jobs

    def _report_cancelled_before_start(self, job: pb.LeasedJob) -> None:
        """A CancelJob came between the Lease and its confirmation: the handler never starts.
        Reported as a FAILURE with the Cancelled error, as for a handler cancelled while
        running (_receipt_after_stop), rather than a RELEASE: both end the job CANCELLED
        (docs/protocol.md), but the failure also records why in its last_error, so the job
        reads the same whichever side of the confirmation the cancel fell. Not counted in
        `processed`: no handler ran."""
        log.info("job %s was cancelled before it started; not running it", job.job_id)
        error = pb.JobError(
            message="cancelled before it started", type=_outcome.CANCELLED_ERROR_TYPE
        )
        assert self._receipts is not None
        self._receipts.send(_receipt(job, pb.OUTCOME_FAILURE, error=error))

    def _declared_task_types(self) -> list[pb.TaskTypeRef]:
        if not self.config.declare_task_types:
            return []
        return [task.ref(name) for name, tasks in self._tasks.items() for task in tasks]

    def _task_for(self, job: pb.LeasedJob) -> _Task | None:
        """The handler of the job's task type at its contract's major version."""
        tasks = self._tasks.get(job.task_type)
        if not tasks:
            return None
        if tasks[0].version is None or not job.task_version:
            return tasks[0]
        try:
            major = Version.parse(job.task_version).major
        except ValueError:
            return None
        return next((task for task in tasks if task.major == major), None)

    def _start(self, job: pb.LeasedJob) -> None:
        context = job_context(
            job, on_heartbeat_request=lambda: self._ask_heartbeat(job.lease_token)
        )
        interval = heartbeat_interval(job, self.config.heartbeat_fraction)
        running = RunningJob(job, context, interval, time.monotonic())
        self._running[job.lease_token] = running
        assert self._heartbeats is not None
        self._heartbeats.tracked(running)
        running.task = asyncio.create_task(self._execute(running))

    def _ask_heartbeat(self, lease_token: str) -> None:
        # Handlers call this on the loop (async) or from their thread (sync).
        assert self._loop is not None and self._heartbeats is not None
        self._loop.call_soon_threadsafe(self._heartbeats.ask, lease_token)

    # -- execute -----------------------------------------------------------------------------

    async def _execute(self, running: RunningJob) -> None:
        receipt: pb.ReceiptRequest | None
        with _tracing.job_span(running.job) as span:
            try:
                receipt = await self._run_handler(running)
            except asyncio.CancelledError:
                receipt = self._receipt_after_stop(running)
            finally:
                del self._running[running.job.lease_token]
                self._wake_lease_loop.set()
            _tracing.record_outcome(span, receipt)
        if running.stop_reason is StopReason.LEASE_LOST:
            receipt = None  # someone else owns the job now: stay silent (fencing)
        if receipt is not None:
            checkpoint = None
            if receipt.outcome != pb.OUTCOME_SUCCESS:
                checkpoint = running.context._take_unsent_checkpoint()
            self._send_receipt(receipt, checkpoint)

    async def _run_handler(self, running: RunningJob) -> pb.ReceiptRequest:
        job = running.job
        task = self._task_for(job)
        if task is None:
            error = _unknown_task_error(job, self._tasks.get(job.task_type, []))
            return _receipt(job, pb.OUTCOME_FAILURE, error=error)
        if task.contract is not None:
            try:
                running.context.message = decode(task.contract.message_class, job.payload)
            except DecodeError as exc:
                return _receipt(job, pb.OUTCOME_FAILURE, error=_decode_error(job, task, exc))
        try:
            if task.timeout is None:
                value = await self._call(task, running.context)
            else:
                value = await self._call_within(task.timeout, task, running.context)
            result = _outcome.result_bytes(value)
        except Retry as retry:
            return _retry_receipt(job, retry)
        except Exception as exc:
            return _failure_receipt(job, exc, task)
        return _receipt(job, pb.OUTCOME_SUCCESS, result=result)

    async def _call(self, task: _Task, context: JobContext) -> Any:
        if task.is_async:
            return await task.handler(context)
        # asyncio.to_thread, on the worker's own pool: the handler sees the caller's contextvars.
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, task.handler, context)
        value = await loop.run_in_executor(self._executor, call)
        if inspect.isawaitable(value):  # a plain callable that returned a coroutine
            value = await value
        return value

    async def _call_within(self, seconds: float, task: _Task, context: JobContext) -> Any:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await self._call(task, context)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError
            context._cancel()  # a sync handler's thread runs on: tell it to stop
            raise _outcome.HandlerTimeout(
                f"the handler ran longer than its {seconds:g}s timeout"
            ) from None

    @staticmethod
    def _receipt_after_stop(running: RunningJob) -> pb.ReceiptRequest | None:
        """The handler's task was cancelled; the reason says what to report."""
        reason = running.stop_reason
        if reason is StopReason.CANCEL_REQUESTED:
            error = pb.JobError(
                message="cancelled while running", type=_outcome.CANCELLED_ERROR_TYPE
            )
            return _receipt(running.job, pb.OUTCOME_FAILURE, error=error)
        if reason is StopReason.LEASE_LOST:
            return None
        # Shutdown (or run() itself was cancelled): hand the job back without counting it.
        return _receipt(running.job, pb.OUTCOME_RELEASE)

    def _send_receipt(self, receipt: pb.ReceiptRequest, checkpoint: bytes | None = None) -> None:
        assert self._receipts is not None
        if receipt.outcome != pb.OUTCOME_RELEASE:
            self.processed += 1
        self._receipts.send(receipt, checkpoint)

    # -- heartbeat replies -------------------------------------------------------------------

    def _cancel_requested(self, running: RunningJob) -> None:
        task = self._task_for(running.job)
        # Async handlers are cancelled; sync ones run on in their thread and see ctx.cancelled.
        running.stop(StopReason.CANCEL_REQUESTED, cancel_task=task is not None and task.is_async)

    def _lease_lost(self, running: RunningJob, message: str) -> None:
        log.warning("lease lost on job %s (%s); abandoning it", running.job.job_id, message)
        running.stop(StopReason.LEASE_LOST)

    # -- shutdown ----------------------------------------------------------------------------

    async def _finish_running(self, grace: float) -> None:
        """Lets running jobs finish for up to `grace` seconds, then cancels and releases the
        rest. Heartbeats go on meanwhile."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if not tasks:
            return
        if grace > 0:
            log.info("waiting up to %.1fs for %d running jobs", grace, len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=grace)
        else:
            pending = {t for t in tasks if not t.done()}
        if not pending:
            return
        log.info("releasing %d unfinished jobs", len(pending))
        for running in list(self._running.values()):
            running.stop(StopReason.SHUTDOWN)
        await asyncio.wait(pending)


def _merge_config(
    config: WorkerConfig | None,
    concurrency: int | None,
    worker_id: str | None,
    shutdown_grace: float | timedelta | None,
) -> WorkerConfig:
    config = config or WorkerConfig()
    if concurrency is not None:
        config.concurrency = concurrency
    if worker_id:
        config.worker_id = worker_id
    if shutdown_grace is not None:
        config.shutdown_grace = _convert.seconds_of(shutdown_grace)
    config.__post_init__()
    return config


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _receipt(
    job: pb.LeasedJob,
    outcome: pb.Outcome.ValueType,
    *,
    result: bytes = b"",
    error: pb.JobError | None = None,
) -> pb.ReceiptRequest:
    return pb.ReceiptRequest(
        job_id=job.job_id, lease_token=job.lease_token, outcome=outcome, result=result, error=error
    )


def _retry_receipt(job: pb.LeasedJob, retry: Retry) -> pb.ReceiptRequest:
    receipt = _receipt(
        job, pb.OUTCOME_FAILURE, error=_convert.job_error_pb(_outcome.retry_error(retry))
    )
    delay = _outcome.retry_delay(retry)
    if delay is not None:
        receipt.retry_after.CopyFrom(_convert.duration(delay))
    return receipt


def _failure_receipt(job: pb.LeasedJob, exc: BaseException, task: _Task) -> pb.ReceiptRequest:
    error = _outcome.failure_error(exc, task.non_retryable)
    return _receipt(job, pb.OUTCOME_FAILURE, error=_convert.job_error_pb(error))


def _unknown_task_error(job: pb.LeasedJob, tasks: Sequence[_Task]) -> pb.JobError:
    # Retryable: another worker of the queue may have the handler (or the version).
    if not tasks:
        message = (
            f"no handler for task type {job.task_type!r} in this worker; register one with "
            "@worker.task(...) or route the task to another queue"
        )
    else:
        versions = ", ".join(t.ref(job.task_type).version for t in tasks)
        message = (
            f"no handler for task type {job.task_type!r} at version {job.task_version!r} "
            f"in this worker (it has {versions}); register one for that major version"
        )
    return pb.JobError(message=message, type=_outcome.UNKNOWN_TASK_ERROR_TYPE)


def _decode_error(job: pb.LeasedJob, task: _Task, exc: Exception) -> pb.JobError:
    # Non-retryable: the same bytes will not decode any better on the next attempt.
    assert task.contract is not None
    return pb.JobError(
        message=f"the payload of job {job.job_id} is not a valid {task.contract.message_type} "
        f"(task {job.task_type!r}, version {job.task_version or 'none'}): {exc}",
        type=_outcome.PAYLOAD_DECODE_ERROR_TYPE,
        non_retryable=True,
    )
