"""Helpers of the store specs: jobs built as the core builds them, handed straight to the
coordinator's store so that a test can put chosen operations into one group commit."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.lifecycle import new_job_id
from conveyor_server.core.model import JobSettings, Micros, NewJob
from conveyor_server.main import Coordinator
from conveyor_server.store.sql import SqlStore
from sqlalchemy.engine import Connection

TASK = "task"


def store_of(coordinator: Coordinator) -> SqlStore:
    return coordinator._store


def new_job(queue: str, now: Micros, **fields: Any) -> NewJob:
    values: dict[str, Any] = {
        "job_id": new_job_id(),
        "queue": queue,
        "task_type": TASK,
        "payload": b"",
        "run_at": now,
        "delay": 0,
        "priority": 0,
        "settings": JobSettings(),
        "idempotency_key": None,
        "parent_job_id": None,
        "throttle_key": None,
        "created_at": now,
    }
    values.update(fields)
    return NewJob(**values)


def failing_write(conn: Connection) -> None:
    """A write that breaks the shared transaction, as a store fault would."""
    conn.execute(sa.text("SELECT 1"))
    raise RuntimeError("injected store fault")


async def lease_ids(stub: rpc.CoordinatorServiceStub, queue: str, max_jobs: int = 10) -> list[str]:
    reply = await stub.Lease(pb.LeaseRequest(worker_id="w", queues=[queue], max_jobs=max_jobs))
    return [job.job_id for job in reply.jobs]


async def execute(store: SqlStore, statement: str, **params: Any) -> None:
    """Raw SQL in the writer (bypassing validation), committed."""

    def run(conn: Connection) -> None:
        conn.execute(sa.text(statement), params)

    await store._write(run)


async def query(store: SqlStore, statement: str, **params: Any) -> list[Any]:
    """Raw SQL read, for rows whose values the API could not even render."""

    def run(conn: Connection) -> list[Any]:
        return list(conn.execute(sa.text(statement), params))

    return await store._read(run)


async def enqueue(stub: rpc.CoordinatorServiceStub, queue: str, **spec: Any) -> str:
    job = pb.JobSpec(queue=queue, task_type=TASK, **spec)
    reply = await stub.Enqueue(pb.EnqueueRequest(job=job))
    return reply.job_id
