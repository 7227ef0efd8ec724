"""The coordinator's log: one structured line per job transition, never a payload or result."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

SECRET_PAYLOAD = b"payload-4242-secret"
SECRET_RESULT = b"result-1717-secret"


async def _one_job_through(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        job = await stub.Enqueue(
            pb.EnqueueRequest(job=pb.JobSpec(queue="q", task_type="t", payload=SECRET_PAYLOAD))
        )
        [leased] = (
            await stub.Lease(pb.LeaseRequest(worker_id="host-1.pid-9", queues=["q"], max_jobs=1))
        ).jobs
        await stub.Receipt(
            pb.ReceiptRequest(
                job_id=leased.job_id,
                lease_token=leased.lease_token,
                outcome=pb.OUTCOME_SUCCESS,
                result=SECRET_RESULT,
            )
        )
        return job.job_id


async def _log_of_one_job(start_server: Any, tmp_path: Path, *options: str) -> tuple[str, str]:
    log_file = tmp_path / "coordinator.log"
    server = await start_server("--log-level", "info", *options, log_file=log_file)
    job_id = await _one_job_through(server.address)
    server.signal(signal.SIGTERM)
    assert await server.exit_code() == 0
    return job_id, log_file.read_text()


def _logfmt(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(line) if "=" in part)


async def test_each_transition_is_one_logfmt_line_naming_the_job(
    start_server: Any, tmp_path: Path
) -> None:
    job_id, log = await _log_of_one_job(start_server, tmp_path)
    lines = [_logfmt(line) for line in log.splitlines() if f"job_id={job_id}" in line]
    events = [line["event"] for line in lines]
    assert events == ["job.enqueued", "job.leased", "job.succeeded"]
    for line in lines[1:]:
        assert line["queue"] == "q" and line["task_type"] == "t"
        assert line["attempt"] == "1" and line["worker_id"] == "host-1.pid-9"


async def test_json_log_lines_parse_and_carry_the_same_fields(
    start_server: Any, tmp_path: Path
) -> None:
    job_id, log = await _log_of_one_job(start_server, tmp_path, "--log-format", "json")
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [r for r in records if r.get("job_id") == job_id]
    assert [r["event"] for r in mine] == ["job.enqueued", "job.leased", "job.succeeded"]
    assert mine[-1]["worker_id"] == "host-1.pid-9"


async def test_payloads_and_results_never_reach_the_log(start_server: Any, tmp_path: Path) -> None:
    _, log = await _log_of_one_job(start_server, tmp_path, "--log-level", "debug")
    assert log  # something was logged at debug level
    assert SECRET_PAYLOAD.decode() not in log
    assert SECRET_RESULT.decode() not in log
