"""The benchmark's worker process (started by bench.py): a Python SDK worker that runs a no-op
handler, prints "ready" once it is connected, and exits after `count` jobs, printing JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from conveyor import JobContext, Worker, WorkerConfig


async def main(address: str, mode: str, count: int, concurrency: int) -> None:
    # CONVEYOR_BENCH_CONFIRM=0: lease without confirmation (what one confirming call costs).
    confirm = os.environ.get("CONVEYOR_BENCH_CONFIRM", "1") != "0"
    config = WorkerConfig(concurrency=concurrency, confirm_leases=confirm)
    worker = Worker(address, ["bench"], config=config)
    latencies: list[float] = []
    started_at: list[float] = []
    done = 0

    @worker.task("noop")
    async def noop(job: JobContext) -> None:
        nonlocal done
        if mode == "latency":
            latencies.append((time.time() - float(job.payload)) * 1000)
        elif mode == "times":
            started_at.append(time.time())
        done += 1
        if done >= count:
            worker.stop()

    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)  # connected and long-polling
    print("ready", flush=True)
    await running  # stop() flushes every receipt before run() returns
    print(
        json.dumps(
            {"finished_at": time.time(), "latencies_ms": latencies, "started_at": started_at}
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
