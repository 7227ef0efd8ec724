"""The SDK client against a real coordinator on port 0."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from conveyor import (
    AlreadyExists,
    Client,
    FailedPrecondition,
    InvalidArgument,
    JobCancelled,
    JobContext,
    JobFailed,
    JobSpec,
    JobState,
    NonRetryableError,
    NotFound,
    RetryPolicy,
    SyncClient,
    Unavailable,
    WaitTimeout,
    Worker,
)
from conveyor_server.main import Coordinator


async def test_enqueue_returns_an_available_job(client: Client) -> None:
    result = await client.enqueue("q", "t", b"payload")

    assert result.state is JobState.AVAILABLE
    assert not result.deduplicated
    assert result.job_id


async def test_get_job_returns_what_was_enqueued(client: Client) -> None:
    policy = RetryPolicy(initial_backoff=timedelta(seconds=2), multiplier=3.0)
    result = await client.enqueue(
        "q",
        "t",
        "text payload",
        priority=7,
        max_attempts=4,
        lease_duration=timedelta(seconds=45),
        retry_policy=policy,
    )

    job = await client.get_job(result.job_id)

    assert (job.queue, job.task_type, job.payload) == ("q", "t", b"text payload")
    assert (job.priority, job.max_attempts, job.attempt) == (7, 4, 0)
    assert job.lease_duration == timedelta(seconds=45)
    assert job.retry_policy.initial_backoff == timedelta(seconds=2)
    assert job.retry_policy.multiplier == 3.0
    assert job.created_at is not None and job.created_at.tzinfo is not None


async def test_enqueue_with_delay_is_scheduled(client: Client) -> None:
    result = await client.enqueue("q", "t", delay=60)

    assert result.state is JobState.SCHEDULED


async def test_enqueue_with_run_at_is_scheduled_for_then(client: Client) -> None:
    run_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)

    result = await client.enqueue("q", "t", run_at=run_at)

    assert result.state is JobState.SCHEDULED
    assert (await client.get_job(result.job_id)).run_at == run_at


async def test_same_idempotency_key_and_content_returns_the_existing_job(client: Client) -> None:
    first = await client.enqueue("q", "t", b"same", idempotency_key="order-1")

    second = await client.enqueue("q", "t", b"same", idempotency_key="order-1")

    assert second.job_id == first.job_id
    assert second.deduplicated


async def test_same_idempotency_key_with_other_content_is_already_exists(client: Client) -> None:
    await client.enqueue("q", "t", b"one", idempotency_key="order-2")

    with pytest.raises(AlreadyExists):
        await client.enqueue("q", "t", b"two", idempotency_key="order-2")


async def test_enqueue_batch_returns_results_in_order(client: Client) -> None:
    specs = [JobSpec("q", "t", str(i).encode()) for i in range(5)]

    results = await client.enqueue_batch(specs)

    payloads = [(await client.get_job(r.job_id)).payload for r in results]
    assert payloads == [b"0", b"1", b"2", b"3", b"4"]


async def test_invalid_queue_name_is_invalid_argument_with_the_servers_message(
    client: Client,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.enqueue("bad queue!", "t")

    assert "queue" in str(raised.value)


async def test_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.get_job("0" * 32)


async def test_list_jobs_filters_by_queue_and_state(client: Client) -> None:
    await client.enqueue("a", "t")
    later = await client.enqueue("a", "t", delay=60)
    await client.enqueue("b", "t")

    page = await client.list_jobs("a", JobState.SCHEDULED)

    assert [j.job_id for j in page.jobs] == [later.job_id]
    assert page.next_page_token == ""


async def test_list_jobs_pages_with_tokens(client: Client) -> None:
    ids = {(await client.enqueue("q", "t")).job_id for _ in range(5)}

    first = await client.list_jobs("q", page_size=3)
    second = await client.list_jobs("q", page_size=3, page_token=first.next_page_token)

    assert len(first.jobs) == 3 and first.next_page_token
    assert {j.job_id for j in first.jobs + second.jobs} == ids


async def test_iter_jobs_walks_every_page(client: Client) -> None:
    ids = {(await client.enqueue("q", "t")).job_id for _ in range(7)}

    seen = [job.job_id async for job in client.iter_jobs("q", page_size=2)]

    assert sorted(seen) == sorted(ids)


async def test_cancel_job_cancels_a_waiting_job_at_once(client: Client) -> None:
    result = await client.enqueue("q", "t")

    job = await client.cancel_job(result.job_id)

    assert job.state is JobState.CANCELLED


async def test_retry_job_replays_a_cancelled_job(client: Client) -> None:
    result = await client.enqueue("q", "t")
    await client.cancel_job(result.job_id)

    job = await client.retry_job(result.job_id)

    assert job.state is JobState.AVAILABLE


async def test_retry_job_refuses_a_job_that_has_not_failed(client: Client) -> None:
    result = await client.enqueue("q", "t")

    with pytest.raises(FailedPrecondition):
        await client.retry_job(result.job_id)


async def test_wait_job_returns_the_job_as_it_is_when_the_timeout_passes(client: Client) -> None:
    result = await client.enqueue("q", "t")

    job = await client.wait_job(result.job_id, timeout=0.05)

    assert job.state is JobState.AVAILABLE


async def test_wait_for_result_times_out_with_wait_timeout(client: Client) -> None:
    result = await client.enqueue("q", "t")

    with pytest.raises(WaitTimeout) as raised:
        await client.wait_for_result(result.job_id, timeout=0.05)

    assert isinstance(raised.value, TimeoutError)
    assert raised.value.job.state is JobState.AVAILABLE


async def test_wait_for_result_raises_job_cancelled(client: Client) -> None:
    result = await client.enqueue("q", "t")
    await client.cancel_job(result.job_id)

    with pytest.raises(JobCancelled):
        await client.wait_for_result(result.job_id, timeout=1)


async def test_wait_for_result_raises_job_failed_with_the_error(
    live_coordinator: Coordinator, client: Client
) -> None:
    worker = Worker(live_coordinator.address, ["q"], concurrency=1)

    @worker.task("fail")
    async def fail(job: JobContext) -> None:
        raise NonRetryableError("card declined")

    running = asyncio.create_task(worker.run())
    try:
        result = await client.enqueue("q", "fail")
        with pytest.raises(JobFailed) as raised:
            await client.wait_for_result(result.job_id, timeout=5)
    finally:
        worker.stop()
        await running

    assert "card declined" in str(raised.value)
    assert raised.value.job.last_error is not None
    assert raised.value.job.last_error.type == "NonRetryableError"


async def test_unreachable_coordinator_is_unavailable() -> None:
    async with Client("127.0.0.1:1", timeout=2) as client:
        with pytest.raises(Unavailable):
            await client.get_job("0" * 32)


async def test_sync_client_enqueues_and_reads_jobs(live_coordinator: Coordinator) -> None:
    def produce() -> tuple[JobState, list[str]]:
        with SyncClient(live_coordinator.address) as sync:
            result = sync.enqueue("q", "t", b"from a thread")
            job = sync.get_job(result.job_id)
            listed = [j.job_id for j in sync.iter_jobs("q", page_size=1)]
            return job.state, listed

    # Blocking calls run off this loop, which also runs the coordinator.
    state, listed = await asyncio.to_thread(produce)

    assert state is JobState.AVAILABLE
    assert len(listed) == 1


async def test_sync_client_raises_typed_errors(live_coordinator: Coordinator) -> None:
    def get_missing() -> None:
        with SyncClient(live_coordinator.address) as sync:
            sync.get_job("0" * 32)

    with pytest.raises(NotFound):
        await asyncio.to_thread(get_missing)


async def test_sync_client_close_is_safe_twice(live_coordinator: Coordinator) -> None:
    def open_and_close_twice() -> None:
        sync = SyncClient(live_coordinator.address)
        sync.close()
        sync.close()

    await asyncio.to_thread(open_and_close_twice)
