"""ListJobs on the wire: filters by queue and state, and paging that covers every job once."""

from __future__ import annotations

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from server_wire import Wire, refused, seconds


async def page(
    wire: Wire, page_size: int, token: str = "", queue: str = "", state: int = 0
) -> pb.ListJobsResponse:
    reply: pb.ListJobsResponse = await wire.stub.ListJobs(
        pb.ListJobsRequest(
            queue=queue,
            state=state,  # type: ignore[arg-type]
            page_size=page_size,
            page_token=token,
        )
    )
    return reply


async def test_list_filters_by_queue(wire: Wire) -> None:
    mine = {(await wire.enqueue(queue="mine")).job_id for _ in range(2)}
    await wire.enqueue(queue="theirs")
    assert {j.job_id for j in await wire.jobs(queue="mine")} == mine


async def test_list_filters_by_state(wire: Wire) -> None:
    available = (await wire.enqueue()).job_id
    scheduled = (await wire.enqueue(delay=seconds(60))).job_id
    assert [j.job_id for j in await wire.jobs(state=pb.JOB_STATE_AVAILABLE)] == [available]
    assert [j.job_id for j in await wire.jobs(state=pb.JOB_STATE_SCHEDULED)] == [scheduled]
    assert await wire.jobs(state=pb.JOB_STATE_FAILED) == []


async def test_list_with_unspecified_state_returns_every_state(wire: Wire) -> None:
    await wire.enqueue()
    await wire.enqueue(delay=seconds(60))
    await wire.enqueue()
    await wire.succeed(await wire.lease_one())
    states = {j.state for j in await wire.jobs(state=pb.JOB_STATE_UNSPECIFIED)}
    assert states == {pb.JOB_STATE_AVAILABLE, pb.JOB_STATE_SCHEDULED, pb.JOB_STATE_SUCCEEDED}


async def test_list_combines_queue_and_state_filters(wire: Wire) -> None:
    wanted = (await wire.enqueue(queue="a")).job_id
    await wire.enqueue(queue="a", delay=seconds(60))
    await wire.enqueue(queue="b")
    found = await wire.jobs(queue="a", state=pb.JOB_STATE_AVAILABLE)
    assert [j.job_id for j in found] == [wanted]


async def test_pages_cover_every_job_exactly_once(wire: Wire) -> None:
    reply = await wire.stub.EnqueueBatch(
        pb.EnqueueBatchRequest(jobs=[pb.JobSpec(queue="q", task_type="t") for _ in range(7)])
    )
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        current = await page(wire, 3, token)
        seen.extend(j.job_id for j in current.jobs)
        sizes.append(len(current.jobs))
        token = current.next_page_token
        if not token:
            break
    assert sizes == [3, 3, 1]
    assert sorted(seen) == sorted(r.job_id for r in reply.results)


async def test_paging_keeps_the_filters(wire: Wire) -> None:
    wanted = {(await wire.enqueue(queue="a")).job_id for _ in range(5)}
    for _ in range(5):
        await wire.enqueue(queue="b")
    first = await page(wire, 3, queue="a")
    second = await page(wire, 3, first.next_page_token, queue="a")
    assert not second.next_page_token
    assert {j.job_id for j in [*first.jobs, *second.jobs]} == wanted


async def test_a_page_size_over_1000_is_capped_not_refused(wire: Wire) -> None:
    await wire.enqueue()
    assert len((await page(wire, 5000)).jobs) == 1


async def test_a_negative_page_size_is_invalid(wire: Wire) -> None:
    message = await refused(page(wire, -1), grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_size" in message


async def test_a_malformed_page_token_is_invalid(wire: Wire) -> None:
    await wire.enqueue()
    message = await refused(page(wire, 10, "not-a-token"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "page_token" in message


async def test_a_page_token_of_non_base64_characters_is_invalid(wire: Wire) -> None:
    await wire.enqueue()
    await refused(page(wire, 10, "!!!!"), grpc.StatusCode.INVALID_ARGUMENT)
