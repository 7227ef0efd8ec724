"""A worker killed mid-job loses its lease: the job is leased again within lease_duration + 1 s."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration

_WORKER = """
import asyncio
import sys

from conveyor import Worker

worker = Worker(sys.argv[1], queues=["fragile"], concurrency=1)


@worker.task("hang")
async def hang(job):
    print("started", job.attempt, flush=True)
    await asyncio.sleep(3600)


asyncio.run(worker.run())
"""

_LEASE_SECONDS = 2
_LEASE = Duration(seconds=_LEASE_SECONDS)


async def test_job_of_a_killed_worker_is_leased_again_within_lease_duration_plus_one_second(
    start_server: Any, tmp_path: Path
) -> None:
    server = await start_server()
    script = tmp_path / "hanging_worker.py"
    script.write_text(_WORKER)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        job = await stub.Enqueue(
            pb.EnqueueRequest(
                job=pb.JobSpec(queue="fragile", task_type="hang", lease_duration=_LEASE)
            )
        )
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            server.address,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), timeout=20)
            assert line.split() == [b"started", b"1"]
            # Let heartbeats run a while, so the lease held at death is a renewed one.
            await asyncio.sleep(_LEASE_SECONDS * 1.5)
        finally:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        reply = await stub.Lease(
            pb.LeaseRequest(
                worker_id="survivor",
                queues=["fragile"],
                max_jobs=1,
                wait=Duration(seconds=_LEASE_SECONDS + 5),
            )
        )
        released_after = loop.time() - killed_at
        history = await stub.GetJob(pb.GetJobRequest(job_id=job.job_id))

    [leased] = reply.jobs
    assert leased.job_id == job.job_id
    assert leased.attempt == 2
    assert released_after <= _LEASE_SECONDS + 1
    assert "lease" in history.last_error.message.lower()
