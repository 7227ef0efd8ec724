"""`conveyor serve --db postgresql://...` end to end: two coordinator processes on one
PostgreSQL database; a job enqueued through one and acknowledged to the caller survives that
process's SIGKILL and is served by the other."""

from __future__ import annotations

from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from databases import PostgresServer


async def test_two_coordinator_processes_share_one_postgresql_database(
    start_server: Any, postgres: PostgresServer
) -> None:
    url = postgres.create_database()  # a fresh one: this coordinator runs the migrations
    flags = ("--db", url.replace("+psycopg", ""), "--db-pool-size", "2")
    first = await start_server(*flags, "--db-statement-timeout", "5")
    second = await start_server(*flags)
    async with grpc.aio.insecure_channel(first.address) as channel:
        job = pb.JobSpec(queue="pg", task_type="task", payload=b"kept")
        enqueued = await rpc.CoordinatorServiceStub(channel).Enqueue(pb.EnqueueRequest(job=job))
    first.process.kill()
    await first.exit_code()
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        leased = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["pg"], max_jobs=5))
        assert [(j.job_id, j.payload) for j in leased.jobs] == [(enqueued.job_id, b"kept")]
        [held] = leased.jobs
        done = await stub.Receipt(
            pb.ReceiptRequest(
                job_id=held.job_id, lease_token=held.lease_token, outcome=pb.OUTCOME_SUCCESS
            )
        )
    assert done.state == pb.JOB_STATE_SUCCEEDED
