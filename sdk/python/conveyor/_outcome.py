"""What a handler's return value or exception amounts to. Shared by the worker and by
`conveyor.testing`, so a unit test sees exactly what the worker would report."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from conveyor.context import NonRetryableError, Retry
from conveyor.models import JobError

# The error types the worker reports for failures it makes itself.
RETRY_ERROR_TYPE = "Retry"
CANCELLED_ERROR_TYPE = "Cancelled"
UNKNOWN_TASK_ERROR_TYPE = "UnknownTaskType"
PAYLOAD_DECODE_ERROR_TYPE = "PayloadDecodeError"
# The coordinator keeps this much of an error message; sending more is wasted bytes.
MAX_ERROR_MESSAGE = 16 * 1024


class HandlerTimeout(TimeoutError):
    """An attempt ran longer than its task's `timeout`: a retryable failure."""


def is_async_handler(handler: Callable[..., Any]) -> bool:
    """An `async def` function, or an object whose `__call__` is one."""
    call = getattr(handler, "__call__", None)  # noqa: B004 - looking for an async __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def result_bytes(value: object) -> bytes:
    """A handler's return value as the job's result: bytes as they are, str as UTF-8."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"a handler must return bytes, str or None, not {type(value).__name__}; "
        "serialise structured results yourself (json.dumps(...).encode(), say)"
    )


def is_non_retryable(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
    return (
        isinstance(exc, NonRetryableError)
        or bool(getattr(exc, "non_retryable", False))
        or (bool(extra) and isinstance(exc, extra))
    )


def failure_error(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> JobError:
    """The error reported for an exception: its message and class name (never the payload)."""
    return JobError(
        message=(str(exc) or type(exc).__name__)[:MAX_ERROR_MESSAGE],
        type=type(exc).__name__,
        non_retryable=is_non_retryable(exc, extra),
    )


def retry_error(retry: Retry) -> JobError:
    return JobError(message=str(retry) or "retry requested", type=RETRY_ERROR_TYPE)


def retry_delay(retry: Retry) -> timedelta | None:
    if retry.after is None:
        return None
    return retry.after if isinstance(retry.after, timedelta) else timedelta(seconds=retry.after)
