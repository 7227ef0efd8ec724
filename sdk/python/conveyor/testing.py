"""Unit-test a handler without a coordinator:

    from conveyor.testing import run_handler

    def test_sends_the_welcome():
        outcome = run_handler(send_welcome, payload=b"ada@example.com")
        assert outcome.result == b"sent to ada@example.com"

`run_handler` calls the handler once, as the worker would (a sync handler in a thread, with
a real JobContext), and tells what the worker would report: a result, a retry (with its
delay), or a failure (retryable or not), plus every checkpoint the handler saved. Inside an
async test, await `arun_handler` instead. The verdict comes from the same code the worker
uses, so it cannot drift from what a real run reports."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from conveyor import _outcome
from conveyor._contracts import contract_of, decode
from conveyor.context import JobContext, Retry
from conveyor.models import JobError
from conveyor.v1 import task_pb2

__all__ = ["HandlerOutcome", "Verdict", "arun_handler", "run_handler"]


class Verdict(enum.Enum):
    SUCCEEDED = "succeeded"  # returned: the job SUCCEEDED with `result`
    RETRY = "retry"  # raised Retry: tried again after `retry_after` (None = policy backoff)
    FAILED = "failed"  # raised: retried by policy, or FAILED at once if `non_retryable`
    CANCELLED = "cancelled"  # let the cancellation through: the job ends CANCELLED


@dataclass
class HandlerOutcome:
    verdict: Verdict
    result: bytes | None = None
    retry_after: timedelta | None = None
    # What the worker would report for RETRY, FAILED and CANCELLED (message and type).
    error: JobError | None = None
    # The exception the handler raised, for asserting on it.
    exception: BaseException | None = None
    saved_checkpoints: list[bytes] = field(default_factory=list)
    heartbeats_requested: int = 0

    @property
    def succeeded(self) -> bool:
        return self.verdict is Verdict.SUCCEEDED

    @property
    def non_retryable(self) -> bool:
        return self.error is not None and self.error.non_retryable


class _RecordingContext(JobContext):
    """A JobContext that remembers every checkpoint and heartbeat request."""

    __slots__ = ("heartbeats", "saved")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs, on_heartbeat_request=self._count_heartbeat)
        self.saved: list[bytes] = []
        self.heartbeats = 0

    def save_checkpoint(self, data: bytes | str) -> None:
        super().save_checkpoint(data)
        self.saved.append(self.saved_checkpoint or b"")

    def _count_heartbeat(self) -> None:
        self.heartbeats += 1


def run_handler(
    handler: Callable[[JobContext], Any],
    payload: bytes | str | Message = b"",
    *,
    checkpoint: bytes | None = None,
    attempt: int = 1,
    max_attempts: int = 20,
    cancel: bool = False,
    non_retryable: Sequence[type[BaseException]] = (),
    task_type: str | None = None,
    queue: str = "test",
    job_id: str = "test-job",
    parent_job_id: str | None = None,
) -> HandlerOutcome:
    """Runs `handler` once and reports what the worker would send. `checkpoint` is what an
    earlier attempt saved; `cancel=True` runs it as if the job were cancelled while running
    (ctx.cancelled is true, and an async handler is also cancelled at its first await);
    `non_retryable` is the same as in `@worker.task(...)`. Call from plain (sync) code.

    `payload` may be a generated message (for a handler of `@worker.task(SendEmail)`): the
    handler gets its bytes as `job.payload` and a fresh decoded copy as `job.message`, and
    `task_type` / `task_version` come from its `(conveyor.v1.task)` option, if it has one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_handler was called inside an event loop: await arun_handler")
    return asyncio.run(
        arun_handler(
            handler,
            payload,
            checkpoint=checkpoint,
            attempt=attempt,
            max_attempts=max_attempts,
            cancel=cancel,
            non_retryable=non_retryable,
            task_type=task_type,
            queue=queue,
            job_id=job_id,
            parent_job_id=parent_job_id,
        )
    )


async def arun_handler(
    handler: Callable[[JobContext], Any],
    payload: bytes | str | Message = b"",
    *,
    checkpoint: bytes | None = None,
    attempt: int = 1,
    max_attempts: int = 20,
    cancel: bool = False,
    non_retryable: Sequence[type[BaseException]] = (),
    task_type: str | None = None,
    queue: str = "test",
    job_id: str = "test-job",
    parent_job_id: str | None = None,
) -> HandlerOutcome:
    """`run_handler` for async tests."""
    message: Message | None = None
    task_version = ""
    if isinstance(payload, Message):
        # A copy decoded from the bytes, as the worker hands it: the test's instance stays
        # untouched, and a field the wire would drop is dropped here too.
        message = decode(type(payload), payload.SerializeToString())
        if type(payload).DESCRIPTOR.GetOptions().HasExtension(task_pb2.task):
            contract = contract_of(type(payload))
            task_type = task_type or contract.name
            task_version = contract.version
        payload = payload.SerializeToString()
    context = _RecordingContext(
        job_id=job_id,
        queue=queue,
        task_type=task_type or "test",
        task_version=task_version,
        message=message,
        payload=payload.encode() if isinstance(payload, str) else bytes(payload),
        attempt=attempt,
        max_attempts=max_attempts,
        checkpoint=checkpoint,
        parent_job_id=parent_job_id,
    )
    is_async = _outcome.is_async_handler(handler)
    if cancel:
        context._cancel()
    task = asyncio.ensure_future(_call(handler, context, is_async))
    if cancel and is_async:
        # The worker cancels an async handler when a heartbeat brings the cancellation,
        # which is always after it started: let it run to its first await. (A sync handler
        # runs on in its thread and should look at ctx.cancelled.)
        asyncio.get_running_loop().call_soon(task.cancel)
    return await _verdict(task, context, tuple(non_retryable))


async def _call(handler: Callable[[JobContext], Any], context: JobContext, is_async: bool) -> Any:
    if is_async:
        return await handler(context)
    call = functools.partial(contextvars.copy_context().run, handler, context)
    value = await asyncio.get_running_loop().run_in_executor(None, call)
    if inspect.isawaitable(value):
        value = await value
    return value


async def _verdict(
    task: asyncio.Future[Any],
    context: _RecordingContext,
    non_retryable: tuple[type[BaseException], ...],
) -> HandlerOutcome:
    def outcome(verdict: Verdict, **fields: Any) -> HandlerOutcome:
        return HandlerOutcome(
            verdict,
            saved_checkpoints=context.saved,
            heartbeats_requested=context.heartbeats,
            **fields,
        )

    try:
        value = await task
        result = _outcome.result_bytes(value)
    except asyncio.CancelledError as exc:
        if not task.cancelled():
            raise  # the test itself is being cancelled
        error = JobError(message="cancelled while running", type=_outcome.CANCELLED_ERROR_TYPE)
        return outcome(Verdict.CANCELLED, error=error, exception=exc)
    except Retry as retry:
        error = _outcome.retry_error(retry)
        return outcome(
            Verdict.RETRY, retry_after=_outcome.retry_delay(retry), error=error, exception=retry
        )
    except Exception as exc:
        error = _outcome.failure_error(exc, non_retryable)
        return outcome(Verdict.FAILED, error=error, exception=exc)
    return outcome(Verdict.SUCCEEDED, result=result)
