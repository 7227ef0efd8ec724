"""The store-independent decisions of core/rules.py: every store applies these."""

from __future__ import annotations

import dataclasses

import pytest
from conveyor_server.core.model import NO_SETTINGS, JobState, NewJob, Version
from conveyor_server.core.rules import (
    CancelStep,
    cancel_step,
    check_retryable,
    child_depth,
    previous_run_blocks,
    retention_cutoff,
    strict_refusal,
)
from conveyor_server.core.schedules import OverlapPolicy
from conveyor_server.errors import FailedPrecondition, InvalidArgument, NotFound

JOB = NewJob(
    job_id="j",
    queue="q",
    task_type="t",
    payload=b"",
    run_at=0,
    delay=0,
    priority=0,
    settings=NO_SETTINGS,
    idempotency_key=None,
    parent_job_id=None,
    throttle_key=None,
    created_at=0,
)
V1 = Version(1, 0, 0)


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (JobState.SCHEDULED, CancelStep.FINISH),
        (JobState.AVAILABLE, CancelStep.FINISH),
        (JobState.LEASED, CancelStep.REQUEST),
        (JobState.CANCELLED, CancelStep.NOTHING),
    ],
)
def test_cancel_step_by_state(state: JobState, step: CancelStep) -> None:
    assert cancel_step("j", state) == step


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED])
def test_a_finished_job_cannot_be_cancelled(state: JobState) -> None:
    with pytest.raises(FailedPrecondition):
        cancel_step("j", state)


@pytest.mark.parametrize("state", [JobState.AVAILABLE, JobState.LEASED, JobState.SUCCEEDED])
def test_only_failed_or_cancelled_jobs_are_retryable(state: JobState) -> None:
    with pytest.raises(FailedPrecondition):
        check_retryable("j", state)
    check_retryable("j", JobState.FAILED)
    check_retryable("j", JobState.CANCELLED)


def test_child_depth_counts_the_parent_chain_up_to_the_limit() -> None:
    child = dataclasses.replace(JOB, parent_job_id="p")
    assert child_depth(JOB, None, 3) == 0
    assert child_depth(child, 2, 3) == 3
    assert isinstance(child_depth(child, 3, 3), FailedPrecondition)
    assert isinstance(child_depth(child, None, 3), NotFound)


def test_strict_queue_refuses_missing_or_unregistered_versions() -> None:
    versioned = dataclasses.replace(JOB, task_version=V1)
    assert strict_refusal(JOB, False, set()) is None
    assert isinstance(strict_refusal(JOB, True, set()), InvalidArgument)
    assert isinstance(strict_refusal(versioned, True, set()), FailedPrecondition)
    assert strict_refusal(versioned, True, {("t", V1)}) is None


def test_skip_overlap_blocks_only_while_the_last_job_is_unfinished() -> None:
    assert previous_run_blocks(OverlapPolicy.SKIP, JobState.LEASED)
    assert not previous_run_blocks(OverlapPolicy.SKIP, JobState.SUCCEEDED)
    assert not previous_run_blocks(OverlapPolicy.SKIP, None)
    assert not previous_run_blocks(OverlapPolicy.ALLOW, JobState.LEASED)


def test_retention_cutoff_is_none_before_anything_can_be_that_old() -> None:
    assert retention_cutoff(now=100, retention=100) is None
    assert retention_cutoff(now=100, retention=30) == 70
