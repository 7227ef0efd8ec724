"""The Python conformance worker with one weakness, named by WEAKNESS, for tests that the
conformance kit fails such a worker:

  polls         long-polls for 10 ms instead of 20 s (an idle worker hammers the coordinator)
  greedy        asks every Lease for one job more than it has free slots
  reports-lost  on FAILED_PRECONDITION for a heartbeat it stops the job but releases it
                (sends a receipt for a lease it no longer holds)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conveyor._running import RunningJob, StopReason
from conveyor.conformance_worker import build_worker


def main() -> None:
    worker = build_worker(
        os.environ["CONVEYOR_ADDRESS"],
        os.environ["CONVEYOR_QUEUE"],
        shutdown_grace=0.5,
        concurrency=int(os.environ.get("CONVEYOR_CONCURRENCY") or 4),
    )
    weakness = os.environ["WEAKNESS"]
    if weakness == "polls":
        worker.config.lease_wait = 0.01
    elif weakness == "greedy":
        lease = worker._lease

        async def greedy(stub: Any, free: int, stopping: Any) -> Any:
            return await lease(stub, free + 1, stopping)

        worker._lease = greedy  # type: ignore[method-assign]
    elif weakness == "reports-lost":

        def release_anyway(running: RunningJob, message: str) -> None:
            running.stop(StopReason.SHUTDOWN)

        worker._lease_lost = release_anyway  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown WEAKNESS {weakness!r}")
    asyncio.run(worker.run(install_signal_handlers=True))


if __name__ == "__main__":
    main()
