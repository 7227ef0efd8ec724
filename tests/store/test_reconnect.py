"""A coordinator outlives its PostgreSQL connections: a dropped connection (a database restart,
a terminated backend, no free connection slot) fails a read as UNAVAILABLE, never INTERNAL, and
the next calls connect anew."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from databases import PostgresServer
from store_support import TASK


@pytest.fixture
async def on_postgres(
    postgres: PostgresServer, clock: FakeClock
) -> AsyncIterator[tuple[Coordinator, rpc.CoordinatorServiceStub, str]]:
    url = postgres.clean_database()
    config = ServerConfig(db_url=url, listen="127.0.0.1:0", log_level="error")
    coordinator = await Coordinator.start(config, clock=clock)
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as channel:
            yield coordinator, rpc.CoordinatorServiceStub(channel), url
    finally:
        await coordinator.stop(grace=1.0)


def _terminate_other_backends(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            terminated = conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        return int(terminated or 0)
    finally:
        engine.dispose()


async def test_reads_after_dropped_connections_are_unavailable_then_served_again(
    on_postgres: tuple[Coordinator, rpc.CoordinatorServiceStub, str],
) -> None:
    _coordinator, stub, url = on_postgres
    job = pb.JobSpec(queue="reconnect", task_type=TASK)
    job_id = (await stub.Enqueue(pb.EnqueueRequest(job=job))).job_id
    for _ in range(8):  # every reader thread has connected
        await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert _terminate_other_backends(url) > 0

    codes = []
    for _ in range(12):
        try:
            await stub.GetJob(pb.GetJobRequest(job_id=job_id))
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())

    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert codes[-4:] == [grpc.StatusCode.OK] * 4  # each reader reconnected


def _client_connections_to(url: str) -> list[str]:
    """The client backends connected to the database, as "pid state: query" lines. Client
    backends only: an autovacuum worker on the database is listed there too (the jobs table
    is vacuumed eagerly)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pid, state, left(query, 60) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
            )
            return [f"{pid} {state}: {query}" for pid, state, query in rows]
    finally:
        engine.dispose()


async def _connections_left(url: str, within_s: float = 10.0) -> list[str]:
    """A closed connection's server process leaves pg_stat_activity only once it has read
    the client's goodbye and exited, a moment after the close (longer on a loaded machine):
    wait for that, and answer what is still there at the deadline."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        left = await asyncio.to_thread(_client_connections_to, url)
        if not left or asyncio.get_running_loop().time() > deadline:
            return left
        await asyncio.sleep(0.05)


async def test_a_stopped_coordinator_leaves_no_connection_open(
    postgres: PostgresServer, clock: FakeClock
) -> None:
    url = postgres.clean_database()
    config = ServerConfig(db_url=url, listen="127.0.0.1:0", log_level="error")
    for _ in range(3):
        coordinator = await Coordinator.start(config, clock=clock)
        async with grpc.aio.insecure_channel(coordinator.address) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            for _ in range(8):  # every reader thread connects
                await stub.ListQueues(pb.ListQueuesRequest())
        await coordinator.stop(grace=1.0)

    # Closing a pooled connection only returns it to its engine's pool: without disposing the
    # engines, each stopped coordinator kept its server slots (the model test's restarts ran
    # PostgreSQL out of connections).
    assert await _connections_left(url) == []
