"""Pure SDK logic: protobuf <-> value conversion, the error table, validated policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from conveyor import (
    AlreadyExists,
    ConveyorError,
    FailedPrecondition,
    InvalidArgument,
    JobSpec,
    JobState,
    LeaseLost,
    NotFound,
    RetryPolicy,
    Unavailable,
    _convert,
)
from conveyor.errors import ERROR_BY_STATUS, from_lease_result, from_rpc_error
from conveyor.models import Outcome
from conveyor.v1 import coordinator_pb2 as pb


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


# -- durations and times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds", "nanos"),
    [(1.5, 1, 500_000_000), (timedelta(milliseconds=2), 0, 2_000_000), (0.9999999999, 1, 0)],
)
def test_duration_from_seconds_or_timedelta(
    value: float | timedelta, seconds: int, nanos: int
) -> None:
    message = _convert.duration(value)

    assert (message.seconds, message.nanos) == (seconds, nanos)


def test_run_at_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _convert.job_spec_pb(JobSpec("q", "t", run_at=datetime(2030, 1, 1)))


# -- job specs ----------------------------------------------------------------------------


def test_unset_spec_fields_stay_unset_so_the_coordinator_applies_defaults() -> None:
    message = _convert.job_spec_pb(JobSpec("q", "t"))

    assert not message.HasField("run_at")
    assert not message.HasField("delay")
    assert not message.HasField("lease_duration")
    assert not message.HasField("retry_policy")
    assert message.max_attempts == 0


def test_spec_fields_are_carried() -> None:
    run_at = datetime(2030, 1, 1, tzinfo=UTC)
    spec = JobSpec(
        "q",
        "t",
        b"p",
        run_at=run_at,
        priority=5,
        max_attempts=3,
        lease_duration=timedelta(seconds=90),
        idempotency_key="k",
        parent_job_id="parent",
    )

    message = _convert.job_spec_pb(spec)

    assert message.run_at.ToDatetime(tzinfo=UTC) == run_at
    assert (message.priority, message.max_attempts) == (5, 3)
    assert message.lease_duration.seconds == 90
    assert (message.idempotency_key, message.parent_job_id) == ("k", "parent")


def test_explicit_zero_jitter_differs_from_unset() -> None:
    explicit = _convert.retry_policy_pb(RetryPolicy(jitter=0.0))
    unset = _convert.retry_policy_pb(RetryPolicy())

    assert explicit.HasField("jitter") and explicit.jitter == 0.0
    assert not unset.HasField("jitter")


def test_retry_policy_round_trips() -> None:
    policy = RetryPolicy(
        initial_backoff=timedelta(milliseconds=250),
        multiplier=3.0,
        max_backoff=timedelta(minutes=5),
        jitter=0.1,
    )

    assert _convert.retry_policy(_convert.retry_policy_pb(policy)) == policy


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_backoff": timedelta(seconds=-1)},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_retry_policy_rejects_impossible_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- jobs -----------------------------------------------------------------------------------


def test_job_converts_state_errors_and_history() -> None:
    message = pb.Job(
        job_id="j",
        queue="q",
        task_type="t",
        state=pb.JOB_STATE_FAILED,
        attempt=2,
        max_attempts=2,
        last_error=pb.JobError(message="boom", type="ValueError", non_retryable=True),
        attempts=[
            pb.Attempt(attempt=1, worker_id="w", outcome=pb.OUTCOME_UNSPECIFIED),
            pb.Attempt(
                attempt=2,
                worker_id="w",
                outcome=pb.OUTCOME_FAILURE,
                error=pb.JobError(message="boom", type="ValueError"),
            ),
        ],
    )
    message.created_at.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))

    job = _convert.job(message)

    assert job.state is JobState.FAILED and job.state.is_terminal
    assert job.last_error is not None and job.last_error.non_retryable
    assert [a.outcome for a in job.attempts] == [Outcome.UNSPECIFIED, Outcome.FAILURE]
    assert job.attempts[0].error is None
    assert job.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert job.finished_at is None


def test_job_state_mirrors_the_proto_enum() -> None:
    for name, number in pb.JobState.items():
        assert JobState[name.removeprefix("JOB_STATE_")] == int(number)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
    ],
)
def test_rpc_error_becomes_its_typed_error_keeping_the_message(
    code: grpc.StatusCode, cls: type[ConveyorError]
) -> None:
    error = from_rpc_error(_rpc_error(code, "queue name 'a b' has a space"))

    assert type(error) is cls
    assert str(error) == "queue name 'a b' has a space"
    assert error.code == code


def test_every_class_in_the_table_knows_its_code() -> None:
    for code, cls in ERROR_BY_STATUS.items():
        assert cls.code == code


def test_unlisted_code_becomes_the_root_error() -> None:
    error = from_rpc_error(_rpc_error(grpc.StatusCode.DATA_LOSS, "lost"))

    assert type(error) is ConveyorError
    assert error.code == grpc.StatusCode.DATA_LOSS


def test_failed_precondition_on_a_lease_item_is_lease_lost() -> None:
    number = grpc.StatusCode.FAILED_PRECONDITION.value[0]

    error = from_lease_result(number, "lease token is not current")

    assert isinstance(error, LeaseLost) and isinstance(error, FailedPrecondition)
    assert str(error) == "lease token is not current"
