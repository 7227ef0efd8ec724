"""The example worker docker/compose.yaml runs (`conveyor worker demo_worker:worker`): it takes
jobs of task type "greet" from the "demo" queue and answers with a greeting. Copy it as the
start of your own worker image, or mount your module in its place.

    conveyor enqueue demo greet Ada --wait     # prints: hello, Ada

The coordinator's address comes from $CONVEYOR_ADDRESS (the compose file points it at the second
coordinator, so jobs enqueued through the first one cross over through the shared database).
"""

from __future__ import annotations

import os

from conveyor import JobContext, Worker

worker = Worker(
    os.environ.get("CONVEYOR_ADDRESS", "127.0.0.1:7345"), queues=["demo"], concurrency=8
)


@worker.task("greet")
async def greet(job: JobContext) -> bytes:
    return b"hello, " + job.payload
