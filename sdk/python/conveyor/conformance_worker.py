"""The Python SDK's conformance worker: the task types `conveyor conformance` exercises,
written with the SDK as any user would. Run it as

    CONVEYOR_ADDRESS=127.0.0.1:7345 CONVEYOR_QUEUE=q python -m conveyor.conformance_worker

The contract it fulfils is in docs/conformance.md."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from conveyor.context import JobContext, NonRetryableError
from conveyor.worker import Worker

ADDRESS_ENV = "CONVEYOR_ADDRESS"
QUEUE_ENV = "CONVEYOR_QUEUE"
GRACE_ENV = "CONVEYOR_SHUTDOWN_GRACE_MS"
CONCURRENCY_ENV = "CONVEYOR_CONCURRENCY"
VERSIONED_VERSION = "1.1.0"
# The SDK's own default; the kit sets a short one for its shutdown scenario.
_DEFAULT_GRACE_MS = 30_000
# Unless the kit says otherwise: one job at a time would do, but a few slots show leasing by
# free slots.
_DEFAULT_CONCURRENCY = 4


def build_worker(
    address: str, queue: str, shutdown_grace: float, concurrency: int = _DEFAULT_CONCURRENCY
) -> Worker:
    worker = Worker(address, [queue], concurrency=concurrency, shutdown_grace=shutdown_grace)

    @worker.task("conformance.echo")
    async def echo(job: JobContext) -> bytes:
        return job.payload

    @worker.task("conformance.fail_once")
    async def fail_once(job: JobContext) -> bytes:
        if job.attempt == 1:
            raise RuntimeError("failing the first attempt on purpose")
        return b"ok"

    @worker.task("conformance.fail_permanently")
    async def fail_permanently(job: JobContext) -> None:
        raise NonRetryableError("this task never succeeds")

    @worker.task("conformance.checkpoint")
    async def checkpoint(job: JobContext) -> bytes | None:
        if job.attempt == 1:
            job.save_checkpoint(b"step-1")
            raise RuntimeError("failing after the checkpoint on purpose")
        return job.checkpoint

    @worker.task("conformance.sleep")
    async def sleep(job: JobContext) -> bytes:
        # The worker heartbeats meanwhile, as for any handler.
        await asyncio.sleep(int(job.payload or b"0") / 1000)
        return b"done"

    @worker.task("conformance.wait_for_cancel")
    async def wait_for_cancel(job: JobContext) -> None:
        # Waits forever: the SDK cancels an async handler when a heartbeat reply brings the
        # cancellation, then reports it, and the job ends CANCELLED.
        await asyncio.Event().wait()

    @worker.task("conformance.versioned", version=VERSIONED_VERSION)
    async def versioned(job: JobContext) -> bytes:
        return job.payload

    return worker


def main() -> int:
    address = os.environ.get(ADDRESS_ENV)
    queue = os.environ.get(QUEUE_ENV)
    if not address or not queue:
        print(f"error: set {ADDRESS_ENV} and {QUEUE_ENV}", file=sys.stderr)
        return 2
    grace_ms = int(os.environ.get(GRACE_ENV) or _DEFAULT_GRACE_MS)
    concurrency = int(os.environ.get(CONCURRENCY_ENV) or _DEFAULT_CONCURRENCY)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    worker = build_worker(address, queue, grace_ms / 1000, concurrency)
    asyncio.run(worker.run(install_signal_handlers=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
