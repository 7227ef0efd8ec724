"""conveyor.testing: a handler's verdict without a coordinator, as the worker would report it."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from conveyor import JobContext, NonRetryableError, Retry
from conveyor.testing import Verdict, arun_handler, run_handler


def test_async_handler_result_is_reported() -> None:
    async def handler(job: JobContext) -> bytes:
        return job.payload[::-1]

    outcome = run_handler(handler, payload=b"abc")

    assert outcome.verdict is Verdict.SUCCEEDED
    assert outcome.succeeded
    assert outcome.result == b"cba"


def test_str_result_is_utf8() -> None:
    outcome = run_handler(lambda job: "héllo")

    assert outcome.result == "héllo".encode()


def test_none_result_is_empty_bytes() -> None:
    outcome = run_handler(lambda job: None)

    assert outcome.result == b""


def test_sync_handler_runs_in_a_thread_without_an_event_loop() -> None:
    seen: dict[str, object] = {}

    def handler(job: JobContext) -> None:
        seen["thread"] = threading.current_thread()
        try:
            asyncio.get_running_loop()
            seen["loop"] = True
        except RuntimeError:
            seen["loop"] = False

    run_handler(handler)

    assert seen["thread"] is not threading.main_thread()
    assert seen["loop"] is False


def test_retry_after_seconds_is_reported_as_a_timedelta() -> None:
    def handler(job: JobContext) -> None:
        raise Retry("rate limited", after=5)

    outcome = run_handler(handler)

    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_after == timedelta(seconds=5)
    assert outcome.error is not None and outcome.error.message == "rate limited"
    assert not outcome.non_retryable


def test_retry_without_after_leaves_the_delay_to_the_policy() -> None:
    def handler(job: JobContext) -> None:
        raise Retry()

    outcome = run_handler(handler)

    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_after is None


def test_retry_rejects_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="negative"):
        Retry(after=-1)


def test_plain_exception_is_a_retryable_failure_named_for_its_class() -> None:
    def handler(job: JobContext) -> None:
        raise KeyError("missing")

    outcome = run_handler(handler)

    assert outcome.verdict is Verdict.FAILED
    assert outcome.error is not None
    assert outcome.error.type == "KeyError"
    assert "missing" in outcome.error.message
    assert not outcome.non_retryable
    assert isinstance(outcome.exception, KeyError)


def test_exception_without_message_reports_its_class_name() -> None:
    def handler(job: JobContext) -> None:
        raise RuntimeError

    outcome = run_handler(handler)

    assert outcome.error is not None and outcome.error.message == "RuntimeError"


def test_non_retryable_error_fails_for_good() -> None:
    class BadInput(NonRetryableError):
        pass

    def handler(job: JobContext) -> None:
        raise BadInput("no such user")

    outcome = run_handler(handler)

    assert outcome.non_retryable
    assert outcome.error is not None and outcome.error.type == "BadInput"


def test_exception_flagged_non_retryable_fails_for_good() -> None:
    class Rejected(Exception):
        non_retryable = True

    def handler(job: JobContext) -> None:
        raise Rejected("declined")

    assert run_handler(handler).non_retryable


def test_exception_classes_named_non_retryable_fail_for_good() -> None:
    def handler(job: JobContext) -> None:
        raise ValueError("bad")

    assert run_handler(handler, non_retryable=[ValueError]).non_retryable
    assert not run_handler(handler).non_retryable


def test_unsupported_return_type_is_a_failure() -> None:
    outcome = run_handler(lambda job: 42)

    assert outcome.verdict is Verdict.FAILED
    assert outcome.error is not None and outcome.error.type == "TypeError"


def test_previous_checkpoint_and_attempt_are_visible() -> None:
    seen: list[object] = []

    def handler(job: JobContext) -> None:
        seen.extend([job.checkpoint, job.attempt, job.is_last_attempt])

    run_handler(handler, checkpoint=b"step-1", attempt=3, max_attempts=3)

    assert seen == [b"step-1", 3, True]


def test_saved_checkpoints_are_recorded_in_order() -> None:
    def handler(job: JobContext) -> None:
        job.save_checkpoint(b"1")
        job.save_checkpoint("2")
        job.heartbeat_now()

    outcome = run_handler(handler)

    assert outcome.saved_checkpoints == [b"1", b"2"]
    assert outcome.heartbeats_requested == 1


def test_sync_handler_sees_cancellation_and_returns() -> None:
    def handler(job: JobContext) -> bytes:
        return b"stopped early" if job.cancelled else b"finished"

    outcome = run_handler(handler, cancel=True)

    assert outcome.result == b"stopped early"


def test_async_handler_is_cancelled_at_its_first_await() -> None:
    async def handler(job: JobContext) -> None:
        await asyncio.sleep(10)

    outcome = run_handler(handler, cancel=True)

    assert outcome.verdict is Verdict.CANCELLED
    assert outcome.error is not None and outcome.error.type == "Cancelled"


async def test_arun_handler_works_inside_an_event_loop() -> None:
    async def handler(job: JobContext) -> str:
        await asyncio.sleep(0)
        return job.job_id

    outcome = await arun_handler(handler, job_id="j-1")

    assert outcome.result == b"j-1"


async def test_run_handler_inside_an_event_loop_points_to_arun_handler() -> None:
    with pytest.raises(RuntimeError, match="arun_handler"):
        run_handler(lambda job: None)
