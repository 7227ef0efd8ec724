"""Benchmark: do 1,000 concurrent long-polls from one principal slow anyone else down?

    python bench/auth_polls.py            # median of 3 runs
    python bench/auth_polls.py --runs 5 --calls 300

Each run starts `conveyor serve --auth` (SQLite, synchronous=FULL, --max-long-polls 1000) on
a fresh database with two tokens: a worker ("poller") and a producer ("other"). It times
`--calls` sequential health checks and `--calls` sequential Enqueue calls of "other" (p50 and
p99, milliseconds), first with nothing else going on, then while "poller" holds 1,000 Lease
long-polls open on an empty queue. The poller is known to hold all 1,000 once one more Lease
of it is refused RESOURCE_EXHAUSTED (its long-poll limit). Figures are medians over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.core.auth import parse_roles
from conveyor_server.store.tokens import TokenStore
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import Coordinator

POLLS = 1000


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


class Server(Coordinator):
    """`conveyor serve --auth` on a fresh database holding two tokens: `poller` (a worker)
    and `other` (a producer)."""

    def __init__(self) -> None:
        directory = tempfile.mkdtemp(prefix="conveyor-bench-auth-")
        db = f"sqlite:///{directory}/bench.db"
        tokens = TokenStore(db)
        tokens.migrate()
        self.poller = tokens.create("poller", "default", parse_roles(["worker"]), ())
        self.other = tokens.create("other", "default", parse_roles(["producer"]), ())
        tokens.close()
        super().__init__(db, "--auth", "--max-long-polls", str(POLLS), "--enqueue-rate", "0")


async def _latencies(call: Callable[[], Awaitable[object]], calls: int) -> dict[str, float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=100)
    return {"p50": cuts[49], "p99": cuts[98]}


async def _hold_polls(
    address: str, token: str, channels: list[grpc.aio.Channel]
) -> list[asyncio.Task[object]]:
    """Opens POLLS long-polls over POLLS / 100 channels (a connection carries at most 100
    concurrent calls by default) and returns once the coordinator holds them all."""
    request = pb.LeaseRequest(worker_id="poller", queues=["idle"], wait=Duration(seconds=30))
    channels.extend(grpc.aio.insecure_channel(address) for _ in range(POLLS // 100 + 1))
    stubs = [rpc.CoordinatorServiceStub(channel) for channel in channels]

    async def poll(stub: rpc.CoordinatorServiceStub) -> object:
        while True:  # 30 s is the longest wait; poll again, as a worker does
            try:
                await stub.Lease(request, metadata=_bearer(token), timeout=60)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                await asyncio.sleep(0.01)  # the probe held a slot a moment

    polls = [asyncio.create_task(poll(stubs[i // 100])) for i in range(POLLS)]
    probe = pb.LeaseRequest(worker_id="probe", queues=["idle"], wait=Duration(nanos=1_000_000))
    while True:  # all 1,000 are held once the poller's next long-poll is refused
        try:
            await stubs[-1].Lease(probe, metadata=_bearer(token), timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return polls
            raise
        await asyncio.sleep(0.05)


async def one_run(calls: int) -> dict[str, float]:
    server = Server()
    try:
        polling: list[grpc.aio.Channel] = []
        async with grpc.aio.insecure_channel(server.address) as measure:
            health = health_pb2_grpc.HealthStub(measure)
            stub = rpc.CoordinatorServiceStub(measure)
            await server.wait_ready(within_s=20.0, channel=measure)
            enqueue = pb.EnqueueRequest(job=pb.JobSpec(queue="work", task_type="t"))

            async def check() -> object:
                return await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

            async def put() -> object:
                return await stub.Enqueue(enqueue, metadata=_bearer(server.other), timeout=10)

            results: dict[str, float] = {}
            for label, value in (await _latencies(check, calls)).items():
                results[f"health_{label}_idle"] = value
            for label, value in (await _latencies(put, calls)).items():
                results[f"enqueue_{label}_idle"] = value
            polls = await _hold_polls(server.address, server.poller, polling)
            for label, value in (await _latencies(check, calls)).items():
                results[f"health_{label}_1000_polls"] = value
            for label, value in (await _latencies(put, calls)).items():
                results[f"enqueue_{label}_1000_polls"] = value
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
            for channel in polling:
                await channel.close()
            return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    runs = [asyncio.run(one_run(args.calls)) for _ in range(args.runs)]
    print(
        f"auth-polls: median of {args.runs} runs, {args.calls} calls each (cpus: {os.cpu_count()})"
    )
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(
            f"  {key:28s} {statistics.median(values):8.2f} ms  "
            f"({min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
