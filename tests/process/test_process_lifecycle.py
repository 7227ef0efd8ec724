"""The coordinator process: discoverable by generic gRPC tools, and graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


async def test_reflection_describes_the_coordinator_service(start_server: Any) -> None:
    server = await start_server()
    # What grpcurl does: no generated code, only what the server says about itself.
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("conveyor.v1.CoordinatorService")
        enqueue = service.FindMethodByName("Enqueue")
        enqueue_input = enqueue.input_type.full_name
    assert {"conveyor.v1.CoordinatorService", "grpc.health.v1.Health"} <= services
    assert enqueue_input == "conveyor.v1.EnqueueRequest"


async def test_health_reports_serving_for_the_server_and_the_service(start_server: Any) -> None:
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        coordinator = await health.Check(
            health_pb2.HealthCheckRequest(service="conveyor.v1.CoordinatorService")
        )
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert coordinator.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_turns_health_not_serving_and_ends_in_flight_calls_cleanly(
    start_server: Any,
) -> None:
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        job = await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="q", task_type="t")))
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        # In flight at SIGTERM: a long-poll on an empty queue and a wait on an unfinished job.
        lease = asyncio.ensure_future(
            stub.Lease(pb.LeaseRequest(worker_id="w", queues=["empty"], max_jobs=1, wait=_s(25)))
        )
        wait = asyncio.ensure_future(
            stub.WaitJob(pb.WaitJobRequest(job_id=job.job_id, timeout=_s(25)))
        )
        await asyncio.sleep(0.3)  # both calls reach the server and park
        started = asyncio.get_running_loop().time()
        server.signal(signal.SIGTERM)
        second = await watch.read()
        leased, waited = await asyncio.gather(lease, wait)
        ended_after = asyncio.get_running_loop().time() - started
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert list(leased.jobs) == []
    assert waited.state == pb.JOB_STATE_AVAILABLE
    assert ended_after < 10, "parked calls should return at shutdown, not run out their wait"
    assert await server.exit_code() == 0


async def test_enqueued_job_is_still_there_after_a_graceful_restart(start_server: Any) -> None:
    server = await start_server()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        job = await stub.Enqueue(
            pb.EnqueueRequest(job=pb.JobSpec(queue="q", task_type="t", payload=b"kept"))
        )
    server.signal(signal.SIGTERM)
    assert await server.exit_code() == 0
    restarted = await start_server()
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        found = await rpc.CoordinatorServiceStub(channel).GetJob(
            pb.GetJobRequest(job_id=job.job_id)
        )
    assert found.payload == b"kept"


def _s(seconds: int) -> Any:
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=seconds)
