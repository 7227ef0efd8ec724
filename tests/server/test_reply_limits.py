"""Replies that fit what the caller can receive: a Lease stops adding jobs before its reply
passes max_reply_bytes (default: under gRPC's 4 MiB receive limit) and leaves the rest
AVAILABLE; ListJobs has a basic view without the large fields and cuts pages by size; and
GetServerInfo states the limits a worker must respect."""

from __future__ import annotations

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.config import ServerConfig
from server_wire import QUEUE, WORKER, Wire, refused

KIB = 1024
MIB = 1024 * KIB
# gRPC's default receive limit, which the `stub` fixture's channel keeps.
GRPC_DEFAULT_RECEIVE = 4 * MIB


async def enqueue_big(wire: Wire, count: int, size: int = 256 * KIB) -> None:
    jobs = [pb.JobSpec(queue=QUEUE, task_type="t", payload=bytes([i]) * size) for i in range(count)]
    await wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=jobs))


async def lease(wire: Wire, max_jobs: int, max_reply_bytes: int = 0) -> pb.LeaseResponse:
    reply: pb.LeaseResponse = await wire.stub.Lease(
        pb.LeaseRequest(
            worker_id=WORKER, queues=[QUEUE], max_jobs=max_jobs, max_reply_bytes=max_reply_bytes
        )
    )
    return reply


async def test_a_lease_of_big_jobs_fits_the_default_receive_limit(wire: Wire) -> None:
    await enqueue_big(wire, 20)
    reply = await lease(wire, max_jobs=20)
    assert 0 < len(reply.jobs) < 20
    assert reply.ByteSize() <= GRPC_DEFAULT_RECEIVE


async def test_jobs_left_out_of_a_lease_reply_stay_available(wire: Wire) -> None:
    await enqueue_big(wire, 20)
    leased = len((await lease(wire, max_jobs=20)).jobs)
    assert len(await wire.jobs(state=pb.JOB_STATE_LEASED)) == leased
    assert len(await wire.jobs(state=pb.JOB_STATE_AVAILABLE)) == 20 - leased
    assert len((await lease(wire, max_jobs=20)).jobs) > 0


async def test_a_lease_reply_stays_within_max_reply_bytes(wire: Wire) -> None:
    await enqueue_big(wire, 10, size=1000)
    reply = await lease(wire, max_jobs=10, max_reply_bytes=5000)
    assert 0 < len(reply.jobs) < 10
    assert reply.ByteSize() <= 5000


async def test_one_job_is_handed_out_even_when_larger_than_max_reply_bytes(wire: Wire) -> None:
    await enqueue_big(wire, 3, size=10 * KIB)
    reply = await lease(wire, max_jobs=3, max_reply_bytes=1)
    assert len(reply.jobs) == 1


async def test_a_negative_max_reply_bytes_is_invalid(wire: Wire) -> None:
    await refused(lease(wire, max_jobs=1, max_reply_bytes=-1), grpc.StatusCode.INVALID_ARGUMENT)


async def list_jobs(wire: Wire, **fields: object) -> pb.ListJobsResponse:
    request = pb.ListJobsRequest(queue=QUEUE, **fields)  # type: ignore[arg-type]
    reply: pb.ListJobsResponse = await wire.stub.ListJobs(request)
    return reply


async def test_list_jobs_leaves_out_payload_result_and_checkpoint_by_default(wire: Wire) -> None:
    await wire.enqueue(payload=b"body")
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"cp")
    await wire.enqueue(payload=b"other")
    done = await wire.lease_one()
    await wire.succeed(done, result=b"res")
    for view in (pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_BASIC):
        jobs = (await list_jobs(wire, view=view)).jobs
        assert len(jobs) == 2
        assert all(j.payload == j.result == j.checkpoint == b"" for j in jobs)
        assert {j.job_id for j in jobs} == {leased.job_id, done.job_id}


async def test_the_full_view_lists_payload_result_and_checkpoint(wire: Wire) -> None:
    await wire.enqueue(payload=b"body")
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"cp")
    await wire.enqueue(payload=b"other")
    done = await wire.lease_one()
    await wire.succeed(done, result=b"res")
    jobs = {j.job_id: j for j in (await list_jobs(wire, view=pb.JOB_VIEW_FULL)).jobs}
    assert (jobs[leased.job_id].payload, jobs[leased.job_id].checkpoint) == (b"body", b"cp")
    assert (jobs[done.job_id].payload, jobs[done.job_id].result) == (b"other", b"res")


async def test_an_unknown_view_is_invalid(wire: Wire) -> None:
    await refused(list_jobs(wire, view=7), grpc.StatusCode.INVALID_ARGUMENT)


async def test_full_pages_of_big_jobs_are_cut_by_size_and_still_cover_every_job(
    wire: Wire,
) -> None:
    await enqueue_big(wire, 20)
    seen: list[str] = []
    token = ""
    sizes: list[int] = []
    while True:
        reply = await list_jobs(wire, view=pb.JOB_VIEW_FULL, page_size=20, page_token=token)
        sizes.append(len(reply.jobs))
        assert reply.ByteSize() <= GRPC_DEFAULT_RECEIVE
        seen.extend(j.job_id for j in reply.jobs)
        token = reply.next_page_token
        if not token:
            break
    assert sizes[0] < 20
    assert len(seen) == len(set(seen)) == 20


async def test_server_info_states_the_limits(wire: Wire, server_config: ServerConfig) -> None:
    info = await wire.stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.max_payload_bytes == server_config.max_payload_bytes
    assert info.max_result_bytes == server_config.max_payload_bytes
    assert info.max_checkpoint_bytes == server_config.max_payload_bytes
    assert info.max_message_bytes == 64 * MIB
    assert info.max_jobs_per_lease == 1000
    assert info.max_lease_wait.ToSeconds() == 30
    assert 0 < info.default_max_reply_bytes <= GRPC_DEFAULT_RECEIVE
    assert info.server_version


async def test_a_lease_of_many_big_jobs_takes_the_first_that_fit_in_dispatch_order(
    wire: Wire,
) -> None:
    await enqueue_big(wire, 100, size=100 * KIB)
    order = [j.job_id for j in reversed(await wire.jobs())]  # listed newest first
    reply = await lease(wire, max_jobs=100)
    assert 0 < len(reply.jobs) < 100
    assert reply.ByteSize() <= GRPC_DEFAULT_RECEIVE
    assert [j.job_id for j in reply.jobs] == order[: len(reply.jobs)]
    assert len(await wire.jobs(state=pb.JOB_STATE_AVAILABLE)) == 100 - len(reply.jobs)
