"""The job state machine's decisions, as pure functions (docs/state-machine.md draws it).

The store reads a leased job under its write lock, asks these functions where the job goes
next, and applies the answer; nothing here touches storage or the network."""

from __future__ import annotations

import os
import random
import time

from conveyor_server.core.model import (
    LEASE_EXPIRED_ERROR,
    JobError,
    JobState,
    LeaseHolder,
    Micros,
    Outcome,
    ReceiptParams,
    RetryPolicy,
    Transition,
)

# Ids must be unique, not secret (lease tokens are the secrets): a seeded PRNG is enough.
_id_random = random.Random(os.urandom(32))  # nosec B311 # ids, not secrets (tokens use secrets)
_TAIL_MAX = (1 << 80) - 1


_last_id = (0, 0)

# About a century: the longest retry delay the arithmetic yields, whatever a policy says.
MAX_RETRY_DELAY: Micros = 100 * 365 * 24 * 3600 * 1_000_000


def new_job_id() -> str:
    """32 hex digits: 48 bits of milliseconds, then 80 bits that start random and count up
    within a millisecond (as monotonic ULIDs do), so that ids, which break ties between jobs
    due at the same time, sort in creation order within this process."""
    global _last_id
    millis = time.time_ns() // 1_000_000
    last_millis, last_tail = _last_id
    if millis <= last_millis and last_tail < _TAIL_MAX:
        millis, tail = last_millis, last_tail + 1  # same millisecond, or the clock stepped back
    else:
        tail = _id_random.getrandbits(79)  # headroom: a millisecond never runs out of ids
    _last_id = (millis, tail)
    return f"{millis:012x}{tail:020x}"


def backoff_delay(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> Micros:
    """Delay before attempt n+1 after attempt n failed:
    min(max_backoff, initial_backoff * multiplier^(n-1)), spread by +/- jitter, and never
    more than MAX_RETRY_DELAY, so that no stored policy can push a time out of range."""
    exponent = max(failed_attempt - 1, 0)
    try:
        base = policy.initial_backoff * policy.multiplier**exponent
    except OverflowError:
        base = float(policy.max_backoff)
    delay = min(float(policy.max_backoff), base)
    if policy.jitter > 0:
        delay *= 1.0 + rng.uniform(-policy.jitter, policy.jitter)
    if not delay < MAX_RETRY_DELAY:  # also true for inf and NaN
        return MAX_RETRY_DELAY
    return max(0, round(delay))


def _retry_or_dead_letter(
    holder: LeaseHolder,
    error: JobError,
    retry_after: Micros | None,
    now: Micros,
    rng: random.Random,
) -> Transition:
    if error.non_retryable or holder.attempt >= holder.max_attempts:
        return Transition(
            state=JobState.FAILED,
            run_at=None,
            attempt_delta=0,
            result=None,
            error=error,
            finished_at=now,
            history_outcome=Outcome.FAILURE,
        )
    delay = min(
        retry_after
        if retry_after is not None
        else backoff_delay(holder.retry_policy, holder.attempt, rng),
        MAX_RETRY_DELAY,
    )
    return Transition(
        state=JobState.SCHEDULED if delay > 0 else JobState.AVAILABLE,
        run_at=now + delay,
        attempt_delta=0,
        result=None,
        error=error,
        finished_at=None,
        history_outcome=Outcome.FAILURE,
    )


def _cancelled(
    holder: LeaseHolder, outcome: Outcome, error: JobError | None, now: Micros
) -> Transition:
    return Transition(
        state=JobState.CANCELLED,
        run_at=None,
        attempt_delta=0,
        result=None,
        error=error,
        finished_at=now,
        history_outcome=outcome,
    )


def decide_receipt(
    holder: LeaseHolder, receipt: ReceiptParams, now: Micros, rng: random.Random
) -> Transition:
    """Where a leased job goes when its worker reports."""
    if receipt.outcome == Outcome.SUCCESS:
        # A job cancelled while running that still succeeded ends SUCCEEDED: its work was done.
        return Transition(
            state=JobState.SUCCEEDED,
            run_at=None,
            attempt_delta=0,
            result=receipt.result,
            error=None,
            finished_at=now,
            history_outcome=Outcome.SUCCESS,
        )
    if holder.cancel_requested:
        return _cancelled(holder, receipt.outcome, receipt.error, now)
    if receipt.outcome == Outcome.RELEASE:
        delay = min(receipt.retry_after or 0, MAX_RETRY_DELAY)
        return Transition(
            state=JobState.SCHEDULED if delay > 0 else JobState.AVAILABLE,
            run_at=now + delay,
            attempt_delta=-1,
            result=None,
            error=None,
            finished_at=None,
            history_outcome=Outcome.RELEASE,
        )
    error = receipt.error or JobError(message="worker reported a failure without an error")
    return _retry_or_dead_letter(holder, error, receipt.retry_after, now, rng)


def decide_unconfirmed(holder: LeaseHolder, now: Micros) -> Transition:
    """A lease taken with confirmation whose window passed unconfirmed: the reply never
    reached a worker that would run the job (it cancelled the call as the reply was sent,
    say), so the job is handed back as a RELEASE would: AVAILABLE at once, its attempt not
    counted, no backoff, never FAILED. A job asked to stop meanwhile is CANCELLED, unrun."""
    if holder.cancel_requested:
        return Transition(
            state=JobState.CANCELLED,
            run_at=None,
            attempt_delta=-1,
            result=None,
            error=None,
            finished_at=now,
            history_outcome=Outcome.RELEASE,
        )
    return Transition(
        state=JobState.AVAILABLE,
        run_at=now,
        attempt_delta=-1,
        result=None,
        error=None,
        finished_at=None,
        history_outcome=Outcome.RELEASE,
    )


def decide_lease_expired(holder: LeaseHolder, now: Micros, rng: random.Random) -> Transition:
    """A lease ran out without a receipt: a failed attempt, retried by policy (or, for a
    lease nobody confirmed, a hand-back: see decide_unconfirmed).

    The backoff counts from the start of the lost lease, not from its expiry: the job has
    already waited out the lease, so a worker that died is replaced as soon as the lease
    ends (while a job that keeps killing its workers still backs off exponentially)."""
    if holder.unconfirmed:
        return decide_unconfirmed(holder, now)
    if holder.cancel_requested:
        return _cancelled(holder, Outcome.UNSPECIFIED, LEASE_EXPIRED_ERROR, now)
    if holder.attempt >= holder.max_attempts:
        transition = _retry_or_dead_letter(holder, LEASE_EXPIRED_ERROR, None, now, rng)
    else:
        due = max(now, holder.leased_at + backoff_delay(holder.retry_policy, holder.attempt, rng))
        transition = _retry_or_dead_letter(holder, LEASE_EXPIRED_ERROR, due - now, now, rng)
    return Transition(
        state=transition.state,
        run_at=transition.run_at,
        attempt_delta=0,
        result=None,
        error=LEASE_EXPIRED_ERROR,
        finished_at=transition.finished_at,
        history_outcome=Outcome.UNSPECIFIED,
    )
