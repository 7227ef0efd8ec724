"""`conveyor enqueue` and `conveyor jobs ...` against a real coordinator."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

from cli_support import Conveyor, run_cli
from conveyor import Client, JobContext, JobState, NonRetryableError, Worker
from conveyor_server.main import Coordinator

StartWorker = Callable[[Worker], "asyncio.Task[None]"]


def _echo_worker(coord: Coordinator) -> Worker:
    worker = Worker(coord.address, ["cli"], concurrency=2, shutdown_grace=1.0)

    @worker.task("echo")
    async def echo(job: JobContext) -> bytes:
        return b"echo:" + job.payload

    @worker.task("explode")
    async def explode(job: JobContext) -> None:
        raise NonRetryableError("boom")

    return worker


async def test_enqueue_prints_an_id_that_get_job_finds_with_the_payload(
    conveyor: Conveyor, client: Client
) -> None:
    result = await conveyor("enqueue", "cli", "send", "hello", "--priority", "3")
    assert result.code == 0, result.stderr
    job = await client.get_job(result.stdout.strip())
    assert (job.queue, job.task_type, job.payload, job.priority) == ("cli", "send", b"hello", 3)


async def test_enqueue_reads_bytes_from_stdin_and_json_shows_them_as_base64(
    conveyor: Conveyor,
) -> None:
    enqueued = await conveyor("enqueue", "cli", "blob", "--payload-file", "-", stdin=b"\x00\xff")
    shown = await conveyor("jobs", "get", enqueued.stdout.strip(), "--json")
    assert shown.code == 0, shown.stderr
    payload = shown.json()["payload"]
    assert payload["encoding"] == "base64"
    assert base64.b64decode(payload["data"]) == b"\x00\xff"


async def test_enqueue_again_with_the_same_idempotency_key_says_deduplicated(
    conveyor: Conveyor,
) -> None:
    args = ("enqueue", "cli", "send", "x", "--idempotency-key", "k-1")
    first, second = await conveyor(*args), await conveyor(*args)
    assert second.stdout.split() == [first.stdout.strip(), "deduplicated"]


async def test_enqueue_with_a_delay_leaves_the_job_scheduled(conveyor: Conveyor) -> None:
    result = await conveyor("enqueue", "cli", "later", "--delay", "1h", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["state"] == "SCHEDULED"


async def test_enqueue_run_at_without_a_zone_is_a_usage_error(conveyor: Conveyor) -> None:
    result = await conveyor("enqueue", "cli", "later", "--run-at", "2030-01-01T09:00:00")
    assert result.code == 2
    assert "has no time zone" in result.stderr


async def test_enqueue_wait_prints_the_result_a_worker_produced(
    live_coordinator: Coordinator, conveyor: Conveyor, start_worker: StartWorker
) -> None:
    start_worker(_echo_worker(live_coordinator))
    result = await conveyor("enqueue", "cli", "echo", "hi", "--json", "--wait", "10")
    assert result.code == 0, result.stderr
    assert result.json()["result"] == {"encoding": "utf-8", "data": "echo:hi"}


async def test_enqueue_wait_exits_1_when_the_job_fails_for_good(
    live_coordinator: Coordinator, conveyor: Conveyor, start_worker: StartWorker
) -> None:
    start_worker(_echo_worker(live_coordinator))
    result = await conveyor("enqueue", "cli", "explode", "--wait", "10")
    assert result.code == 1
    assert result.stderr.startswith("error: JOB_FAILED: ")
    assert "boom" in result.stderr
    assert "Traceback" not in result.stderr


async def test_jobs_list_json_filters_by_state(conveyor: Conveyor, client: Client) -> None:
    kept = await client.enqueue("cli", "send")
    cancelled = await client.enqueue("cli", "send")
    await client.cancel_job(cancelled.job_id)
    result = await conveyor("jobs", "list", "--state", "cancelled", "--json")
    assert result.code == 0, result.stderr
    assert [job["job_id"] for job in result.json()] == [cancelled.job_id]
    assert kept.job_id not in result.stdout


async def test_jobs_list_stops_at_the_limit(conveyor: Conveyor, client: Client) -> None:
    for _ in range(3):
        await client.enqueue("cli", "send")
    result = await conveyor("jobs", "list", "--queue", "cli", "--limit", "2", "--json")
    assert len(result.json()) == 2


async def test_jobs_cancel_cancels_a_waiting_job(conveyor: Conveyor, client: Client) -> None:
    job = await client.enqueue("cli", "send")
    result = await conveyor("jobs", "cancel", job.job_id)
    assert result.code == 0, result.stderr
    assert "CANCELLED" in result.stdout
    assert (await client.get_job(job.job_id)).state == JobState.CANCELLED


async def test_jobs_retry_replays_a_cancelled_job(conveyor: Conveyor, client: Client) -> None:
    job = await client.enqueue("cli", "send")
    await client.cancel_job(job.job_id)
    result = await conveyor("jobs", "retry", job.job_id, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["state"] == "AVAILABLE"


async def test_jobs_wait_on_an_unfinished_job_times_out_with_exit_1(
    conveyor: Conveyor, client: Client
) -> None:
    job = await client.enqueue("cli", "send")
    result = await conveyor("jobs", "wait", job.job_id, "--timeout", "0.2")
    assert result.code == 1
    assert result.stderr.startswith("error: WAIT_TIMEOUT: ")


async def test_jobs_wait_shows_a_finished_job(conveyor: Conveyor, client: Client) -> None:
    job = await client.enqueue("cli", "send")
    await client.cancel_job(job.job_id)
    result = await conveyor("jobs", "wait", job.job_id, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["state"] == "CANCELLED"


async def test_an_unknown_job_prints_not_found(conveyor: Conveyor) -> None:
    result = await conveyor("jobs", "get", "no-such-job")
    assert result.code == 1
    assert result.stderr.startswith("error: NOT_FOUND: ")
    assert result.stdout == ""


async def test_a_bad_queue_name_prints_invalid_argument(conveyor: Conveyor) -> None:
    result = await conveyor("enqueue", "bad name!", "send")
    assert result.code == 1
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "Traceback" not in result.stderr


async def test_an_unreachable_coordinator_prints_unavailable() -> None:
    result = await run_cli("jobs", "list", "--address", "127.0.0.1:1")
    assert result.code == 1
    assert result.stderr.startswith("error: UNAVAILABLE: ")
