"""The recursion guard: parent_job_id chains get deeper by one per generation and stop at
the server's max_depth (here 2)."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.config import ServerConfig
from server_wire import QUEUE, TASK, Wire, refused

MAX_DEPTH = 2


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, max_depth=MAX_DEPTH)


async def chain(wire: Wire, length: int) -> list[str]:
    """Enqueues a root and `length - 1` descendants, each the child of the one before."""
    ids = [(await wire.enqueue()).job_id]
    for _ in range(length - 1):
        ids.append((await wire.enqueue(parent_job_id=ids[-1])).job_id)
    return ids


async def test_a_job_without_a_parent_has_depth_zero(wire: Wire) -> None:
    [root] = await chain(wire, 1)
    job = await wire.get(root)
    assert (job.depth, job.parent_job_id) == (0, "")


async def test_a_child_is_one_deeper_than_its_parent(wire: Wire) -> None:
    root, child, grandchild = await chain(wire, MAX_DEPTH + 1)
    jobs = [await wire.get(job_id) for job_id in (root, child, grandchild)]
    assert [j.depth for j in jobs] == [0, 1, 2]
    assert [j.parent_job_id for j in jobs] == ["", root, child]


async def test_a_leased_child_carries_its_parent_id(wire: Wire) -> None:
    root = (await wire.enqueue(queue="parents")).job_id
    await wire.enqueue(parent_job_id=root)
    assert (await wire.lease_one()).parent_job_id == root


async def test_a_child_beyond_max_depth_is_refused_and_not_stored(wire: Wire) -> None:
    ids = await chain(wire, MAX_DEPTH + 1)
    message = await refused(
        wire.enqueue(parent_job_id=ids[-1]), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "depth" in message and f"maximum of {MAX_DEPTH}" in message
    assert len(await wire.jobs()) == MAX_DEPTH + 1


async def test_a_batch_with_a_child_beyond_max_depth_stores_none_of_the_batch(
    wire: Wire,
) -> None:
    ids = await chain(wire, MAX_DEPTH + 1)
    specs = [
        pb.JobSpec(queue=QUEUE, task_type=TASK, parent_job_id=ids[0]),
        pb.JobSpec(queue=QUEUE, task_type=TASK, parent_job_id=ids[-1]),
    ]
    message = await refused(
        wire.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=specs)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "jobs[1]" in message and "depth" in message
    assert len(await wire.jobs()) == MAX_DEPTH + 1


async def test_an_unknown_parent_is_not_found(wire: Wire) -> None:
    message = await refused(wire.enqueue(parent_job_id="f" * 32), grpc.StatusCode.NOT_FOUND)
    assert "parent_job_id" in message
    assert await wire.jobs() == []
