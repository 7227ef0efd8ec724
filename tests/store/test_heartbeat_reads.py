"""What a heartbeat reads: the checkpoint column only when the heartbeat asks for it
(HeartbeatRequest.return_checkpoint). Heartbeats are the hot path, and a checkpoint may be as
large as a payload."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from store_support import enqueue

QUEUE = "reads"


@pytest.fixture
def selects() -> Iterator[list[str]]:
    """The SELECT statements every engine of this process runs while the test does."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


async def leased_with_checkpoint(stub: rpc.CoordinatorServiceStub) -> pb.LeasedJob:
    await enqueue(stub, QUEUE)
    reply = await stub.Lease(pb.LeaseRequest(queues=[QUEUE], worker_id="w", max_jobs=1))
    [job] = reply.jobs
    await stub.Heartbeat(
        pb.HeartbeatRequest(job_id=job.job_id, lease_token=job.lease_token, checkpoint=b"c")
    )
    return job


def reading_the_checkpoint(statements: list[str]) -> list[str]:
    return [s for s in statements if "checkpoint" in s.split("FROM")[0]]


async def test_only_a_heartbeat_asking_for_the_checkpoint_reads_it(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub, selects: list[str]
) -> None:
    job = await leased_with_checkpoint(stub)
    selects.clear()
    await stub.Heartbeat(pb.HeartbeatRequest(job_id=job.job_id, lease_token=job.lease_token))
    assert selects, "the heartbeat's read was not seen"
    assert reading_the_checkpoint(selects) == []
    selects.clear()
    reply = await stub.Heartbeat(
        pb.HeartbeatRequest(job_id=job.job_id, lease_token=job.lease_token, return_checkpoint=True)
    )
    assert reply.checkpoint == b"c"
    assert len(reading_the_checkpoint(selects)) == 1
