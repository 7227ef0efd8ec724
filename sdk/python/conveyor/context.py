"""What a handler sees of its job, and the exceptions it raises to steer the outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any


class Retry(Exception):
    """Raise in a handler to fail this attempt and run the job again after `after` (seconds or
    a timedelta) instead of the retry policy's backoff. It still counts as an attempt, so the
    job goes to FAILED once its attempts are used up."""

    def __init__(self, message: str = "", *, after: timedelta | float | None = None) -> None:
        super().__init__(message)
        if (
            after is not None
            and (after.total_seconds() if isinstance(after, timedelta) else after) < 0
        ):
            raise ValueError(f"Retry(after=...) must not be negative, got {after}")
        self.after = after


class NonRetryableError(Exception):
    """Raise (or subclass) to fail the job for good: it goes straight to FAILED, whatever
    attempts are left. Any exception whose class or instance has a true `non_retryable`
    attribute does the same, as do classes named in `@worker.task(..., non_retryable=...)`."""

    non_retryable = True


class JobContext:
    """One attempt of one job, as its handler sees it.

    `payload` is the job's bytes; for a handler registered with a message class
    (`@worker.task(SendEmail)`), `message` is the payload decoded as that class (None for a
    handler registered by name). `task_version` is the contract version the producer named
    ("" if none). `checkpoint` is what an earlier attempt saved (None if nothing).
    `save_checkpoint` stores progress for a later attempt. `cancelled` turns true when the job
    was cancelled, its lease was lost, or the worker is shutting down past its grace period: a
    sync handler should look at it between steps and return early (async handlers are also
    cancelled).
    Safe to use from the thread a sync handler runs in."""

    __slots__ = (
        "_cancelled",
        "_lock",
        "_on_heartbeat_request",
        "_saved",
        "_unsent",
        "attempt",
        "checkpoint",
        "job_id",
        "max_attempts",
        "message",
        "parent_job_id",
        "payload",
        "queue",
        "task_type",
        "task_version",
    )

    def __init__(
        self,
        *,
        job_id: str,
        queue: str,
        task_type: str,
        payload: bytes,
        attempt: int = 1,
        max_attempts: int = 1,
        checkpoint: bytes | None = None,
        parent_job_id: str | None = None,
        on_heartbeat_request: Callable[[], None] | None = None,
        task_version: str = "",
        message: Any = None,
    ) -> None:
        self.job_id = job_id
        self.queue = queue
        self.task_type = task_type
        self.payload = payload
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.checkpoint = checkpoint
        self.parent_job_id = parent_job_id
        self.task_version = task_version
        # Any: the handler knows its own message class; the worker only decodes into it.
        self.message: Any = message
        self._on_heartbeat_request = on_heartbeat_request
        self._lock = threading.Lock()
        self._saved: bytes | None = None  # the newest checkpoint of this attempt
        self._unsent = False  # ... and whether the coordinator has not got it yet
        # A plain flag: set from the event loop, read from a handler thread (atomic in Python).
        self._cancelled = False

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def saved_checkpoint(self) -> bytes | None:
        """The newest checkpoint this attempt saved, if any."""
        return self._saved

    def save_checkpoint(self, data: bytes | str) -> None:
        """Stores progress for a later attempt (str is sent as UTF-8). It travels with the next
        heartbeat (only the newest is sent), or just before the receipt if the attempt ends
        first without succeeding."""
        value = data.encode() if isinstance(data, str) else bytes(data)
        with self._lock:
            self._saved = value
            self._unsent = True

    def heartbeat_now(self) -> None:
        """Asks for a heartbeat as soon as possible (say, to send a checkpoint at once)."""
        if self._on_heartbeat_request is not None:
            self._on_heartbeat_request()

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop: the job was cancelled, its lease was lost, or
        the worker is shutting down and the grace period is over."""
        return self._cancelled

    # -- for the worker ----------------------------------------------------------------------

    def _cancel(self) -> None:
        self._cancelled = True

    def _take_unsent_checkpoint(self) -> bytes | None:
        with self._lock:
            if not self._unsent:
                return None
            self._unsent = False
            return self._saved

    def _unsent_again(self, value: bytes) -> None:
        """A heartbeat carrying `value` failed: send it again, unless a newer one was saved."""
        with self._lock:
            if self._saved == value:
                self._unsent = True
