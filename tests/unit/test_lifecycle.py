"""The pure decisions of the job state machine (no server needed)."""

from __future__ import annotations

import random

import pytest
from conveyor_server.core.lifecycle import (
    backoff_delay,
    decide_lease_expired,
    decide_receipt,
    new_job_id,
)
from conveyor_server.core.model import (
    JobError,
    JobState,
    LeaseHolder,
    Outcome,
    ReceiptParams,
    RetryPolicy,
)

S = 1_000_000
NO_JITTER = RetryPolicy(initial_backoff=1 * S, multiplier=2.0, max_backoff=60 * S, jitter=0.0)


def holder(
    attempt: int = 1, max_attempts: int = 5, cancel: bool = False, unconfirmed: bool = False
) -> LeaseHolder:
    return LeaseHolder(
        job_id="j",
        queue="q",
        task_type="t",
        attempt=attempt,
        max_attempts=max_attempts,
        retry_policy=NO_JITTER,
        leased_by="w",
        leased_at=100 * S,
        cancel_requested=cancel,
        unconfirmed=unconfirmed,
    )


def receipt(
    outcome: Outcome, error: JobError | None = None, retry_after: int | None = None
) -> ReceiptParams:
    return ReceiptParams(
        "j", "tok", outcome, b"r" if outcome == Outcome.SUCCESS else None, error, retry_after
    )


@pytest.mark.parametrize(
    ("attempt", "expected_seconds"), [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)]
)
def test_backoff_grows_exponentially_up_to_max(attempt: int, expected_seconds: int) -> None:
    assert backoff_delay(NO_JITTER, attempt, random.Random(1)) == expected_seconds * S


def test_backoff_jitter_stays_within_fraction() -> None:
    policy = RetryPolicy(initial_backoff=10 * S, multiplier=2.0, max_backoff=3600 * S, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 1, rng) for _ in range(2000)]
    assert min(delays) >= 8 * S and max(delays) <= 12 * S
    assert max(delays) - min(delays) > 3 * S  # actually spread, not constant


def test_backoff_survives_huge_exponents() -> None:
    policy = RetryPolicy(initial_backoff=1 * S, multiplier=100.0, max_backoff=5 * S, jitter=0.0)
    assert backoff_delay(policy, 10_000, random.Random()) == 5 * S


def test_success_ends_succeeded_with_result() -> None:
    t = decide_receipt(holder(), receipt(Outcome.SUCCESS), 200 * S, random.Random())
    assert (t.state, t.result, t.finished_at) == (JobState.SUCCEEDED, b"r", 200 * S)


def test_failure_with_attempts_left_is_scheduled_after_backoff() -> None:
    t = decide_receipt(
        holder(attempt=3), receipt(Outcome.FAILURE, JobError("x")), 200 * S, random.Random()
    )
    assert (t.state, t.run_at) == (JobState.SCHEDULED, 204 * S)


def test_failure_on_last_attempt_dead_letters() -> None:
    t = decide_receipt(
        holder(attempt=5), receipt(Outcome.FAILURE, JobError("x")), 200 * S, random.Random()
    )
    assert (t.state, t.finished_at) == (JobState.FAILED, 200 * S)


def test_non_retryable_failure_dead_letters_at_once() -> None:
    error = JobError("bad input", non_retryable=True)
    t = decide_receipt(holder(attempt=1), receipt(Outcome.FAILURE, error), 200 * S, random.Random())
    assert t.state == JobState.FAILED


def test_retry_after_replaces_backoff() -> None:
    t = decide_receipt(
        holder(), receipt(Outcome.FAILURE, JobError("x"), 9 * S), 200 * S, random.Random()
    )
    assert t.run_at == 209 * S


def test_release_does_not_count_an_attempt() -> None:
    t = decide_receipt(holder(attempt=2), receipt(Outcome.RELEASE), 200 * S, random.Random())
    assert (t.state, t.attempt_delta, t.run_at) == (JobState.AVAILABLE, -1, 200 * S)


def test_failure_after_cancel_request_ends_cancelled() -> None:
    t = decide_receipt(
        holder(cancel=True), receipt(Outcome.FAILURE, JobError("x")), 200 * S, random.Random()
    )
    assert t.state == JobState.CANCELLED


def test_success_after_cancel_request_still_succeeds() -> None:
    t = decide_receipt(holder(cancel=True), receipt(Outcome.SUCCESS), 200 * S, random.Random())
    assert t.state == JobState.SUCCEEDED


def test_expired_lease_is_retried_at_once_when_backoff_passed_during_lease() -> None:
    t = decide_lease_expired(holder(attempt=1), 130 * S, random.Random())
    assert (t.state, t.run_at, t.error and t.error.message) == (
        JobState.AVAILABLE,
        130 * S,
        "lease expired",
    )


def test_expired_lease_backs_off_from_lease_start_when_backoff_is_longer() -> None:
    t = decide_lease_expired(holder(attempt=7, max_attempts=10), 130 * S, random.Random())
    assert (t.state, t.run_at) == (JobState.SCHEDULED, 160 * S)  # leased at 100 s, backoff 60 s


def test_expired_lease_on_last_attempt_dead_letters() -> None:
    t = decide_lease_expired(holder(attempt=5), 130 * S, random.Random())
    assert t.state == JobState.FAILED


def test_job_ids_sort_by_creation_and_do_not_repeat() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)
    assert ids[0][:12] <= ids[-1][:12]


def test_an_unconfirmed_lease_is_handed_back_unspent_even_on_its_last_attempt() -> None:
    t = decide_lease_expired(
        holder(attempt=1, max_attempts=1, unconfirmed=True), 500 * S, random.Random(1)
    )
    assert (t.state, t.run_at, t.attempt_delta) == (JobState.AVAILABLE, 500 * S, -1)
    assert (t.error, t.finished_at, t.history_outcome) == (None, None, Outcome.RELEASE)


def test_an_unconfirmed_lease_asked_to_stop_is_cancelled_unspent() -> None:
    t = decide_lease_expired(holder(cancel=True, unconfirmed=True), 500 * S, random.Random(1))
    assert (t.state, t.attempt_delta, t.finished_at) == (JobState.CANCELLED, -1, 500 * S)
