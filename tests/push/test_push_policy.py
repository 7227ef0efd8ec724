"""Pure push policy: how a reply becomes a receipt, Retry-After, and the signature that the
SDK verifier accepts or refuses."""

from __future__ import annotations

import pytest
from conveyor.push import sign, verify_signature
from conveyor_server.core import push
from conveyor_server.core.model import Outcome

S = 1_000_000
NOW = 1_800_000_000 * S


def outcome(status: int, body: bytes = b"", retry_after: str | None = None) -> push.PushOutcome:
    return push.outcome_of_reply(status, body, retry_after, max_result=10, now=NOW)


def test_a_2xx_reply_is_a_success_with_the_body_as_result() -> None:
    assert outcome(200, b"ok") == push.PushOutcome(Outcome.SUCCESS, result=b"ok")
    assert outcome(204).outcome is Outcome.SUCCESS


def test_202_leaves_the_receipt_to_the_function() -> None:
    assert outcome(202, b"ignored").outcome is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_not_retryable(status: int) -> None:
    result = outcome(status)
    assert result.outcome is Outcome.FAILURE and result.error is not None
    assert result.error.non_retryable


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_5xx_408_409_429_are_retryable(status: int) -> None:
    result = outcome(status)
    assert result.error is not None and not result.error.non_retryable


def test_retry_after_seconds_and_http_date_are_honoured_on_429() -> None:
    assert outcome(429, retry_after="30").retry_after == 30 * S
    an_hour_after_now = "Fri, 15 Jan 2027 09:00:00 GMT"
    assert outcome(429, retry_after=an_hour_after_now).retry_after == 3600 * S
    assert outcome(429, retry_after="soon").retry_after is None


def test_a_reply_over_the_result_limit_fails_saying_why() -> None:
    result = outcome(200, b"x" * 11)
    assert result.error is not None and "at most 10 bytes" in result.error.message


def test_an_error_quotes_only_a_short_prefix_of_the_body() -> None:
    result = outcome(500, b"y" * 10_000)
    assert result.error is not None and len(result.error.message) < 300


def test_transport_errors_are_retryable() -> None:
    for timed_out in (True, False):
        error = push.outcome_of_transport_error(timed_out, "ReadTimeout").error
        assert error is not None and not error.non_retryable


def test_the_server_signature_verifies_with_the_sdk() -> None:
    header = push.signature("k", 1_800_000_000, b"body")
    assert header == sign("k", 1_800_000_000, b"body")
    assert verify_signature("k", header, b"body", now=1_800_000_010)


def test_a_bad_signature_is_refused() -> None:
    header = sign("k", 1_800_000_000, b"body")
    assert not verify_signature("other", header, b"body", now=1_800_000_000)
    assert not verify_signature("k", header, b"tampered", now=1_800_000_000)
    assert not verify_signature("k", "t=1800000000,v1=00", b"body", now=1_800_000_000)
    assert not verify_signature("k", None, b"body", now=1_800_000_000)
    assert not verify_signature("k", "garbage", b"body", now=1_800_000_000)


def test_a_replayed_signature_older_than_five_minutes_is_refused() -> None:
    header = sign("k", 1_800_000_000, b"body")
    assert verify_signature("k", header, b"body", now=1_800_000_300)
    assert not verify_signature("k", header, b"body", now=1_800_000_301)


def test_the_push_target_round_trips_through_its_stored_form() -> None:
    config = push.PushConfig(
        url="https://fn.example/run",
        timeout=45 * S,
        headers=(("Authorization", "Bearer x"), ("X-A", "1")),
        max_concurrency=7,
        signing_secret="s",
    )
    assert push.PushConfig.from_bytes(config.to_bytes()) == config
