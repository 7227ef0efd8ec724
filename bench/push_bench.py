"""Push queues: throughput to a local no-op function server, and dispatch latency (due ->
request received by the function), beside the pull worker's start latency.

    python bench/push_bench.py              # median of 3 runs
    python bench/push_bench.py --runs 5 --jobs 5000

push-throughput enqueues --jobs jobs, then sets the queue's push target (max_concurrency
--concurrency, default 10) and times until the function has answered every one and all have
SUCCEEDED.
push-latency sends one job at a time to an idle push queue: time from sending Enqueue to the
function receiving the POST (the payload carries the send time; one machine, one clock).
pull-latency is bench.py's start-latency (an idle long-polling SDK worker) for comparison.
The coordinator runs in its own process (bench.Server); the function server runs here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

sys.path.insert(0, str(Path(__file__).parent))
from bench import QUEUE, Server, _count_succeeded, start_latency


class NoopFunction:
    """An HTTP/1.1 keep-alive server answering every POST with 200 "ok"."""

    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[float] = []
        self.all_in = asyncio.Event()
        self.expected = 0
        self.url = ""

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if body.startswith(b"t="):
                    self.latencies.append(time.time() - float(body[2:]))
                self.received += 1
                if self.received >= self.expected:
                    self.all_in.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the bench is over (cancelled at exit): nothing to report
        finally:
            writer.close()


async def _set_push(stub: rpc.CoordinatorServiceStub, url: str, concurrency: int = 10) -> None:
    # Leases of 60 s outlast the 30 s request timeout plus the pusher's margin, so the
    # pusher need not extend each lease (one more write per job) before it POSTs.
    queue = pb.Queue(
        name=QUEUE,
        push=pb.PushTarget(url=url, max_concurrency=concurrency),
        lease_duration=Duration(seconds=60),
    )
    await stub.UpdateQueue(
        pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=["push", "lease_duration"]))
    )


async def push_throughput(address: str, jobs: int, concurrency: int) -> dict[str, float]:
    function = NoopFunction()
    function.expected = jobs
    server = await function.start()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        for start in range(0, jobs, 1000):
            batch = [
                pb.JobSpec(queue=QUEUE, task_type="noop") for _ in range(min(1000, jobs - start))
            ]
            await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=batch))
        began = time.perf_counter()
        await _set_push(stub, function.url, concurrency)
        await function.all_in.wait()
        for _ in range(6000):  # the last receipts land just after the last request
            if await _count_succeeded(stub) >= jobs:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
    server.close()
    return {"jobs_per_s": jobs / elapsed}


async def push_latency(address: str, samples: int) -> dict[str, float]:
    function = NoopFunction()
    server = await function.start()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        await _set_push(stub, function.url)
        for _ in range(samples):
            payload = f"t={time.time()!r}".encode()
            reply = await stub.Enqueue(
                pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="noop", payload=payload))
            )
            await stub.WaitJob(pb.WaitJobRequest(job_id=reply.job_id))
            await asyncio.sleep(0.01)  # let the pusher long-poll again
    server.close()
    latencies = sorted(ms * 1000 for ms in function.latencies)
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def run(name: str, args: argparse.Namespace) -> dict[str, float]:
    server = Server(args.synchronous, "warning")
    try:
        await server.wait_ready()
        if name == "push-throughput":
            return await push_throughput(server.address, args.jobs, args.concurrency)
        if name == "push-latency":
            return await push_latency(server.address, args.samples)
        return await start_latency(server.address, args.samples)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10, help="the target's max_concurrency")
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args()
    names = args.only or ["push-throughput", "push-latency", "pull-latency"]
    for name in names:
        runs: list[dict[str, Any]] = [asyncio.run(run(name, args)) for _ in range(args.runs)]
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(
                f"{name:16} {key:12} median {statistics.median(values):9.2f}  "
                f"(min {min(values):.2f}, max {max(values):.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
