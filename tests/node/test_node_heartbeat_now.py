"""JobContext.heartbeatNow() in the Node SDK: a checkpoint reaches the coordinator at once
instead of with the next scheduled heartbeat (a third of the lease later)."""

from __future__ import annotations

import asyncio

from conveyor import Client
from conveyor_server.main import Coordinator
from node_support import HERE, SpawnNode, require_node

require_node()

HEARTBEAT_NOW_WORKER = HERE / "heartbeat_now_worker.mjs"
# The next scheduled heartbeat comes a third of this later: far beyond the test's wait.
LONG_LEASE_SECONDS = 300


async def test_heartbeat_now_sends_the_checkpoint_before_the_scheduled_beat(
    live_coordinator: Coordinator, client: Client, spawn_node: SpawnNode
) -> None:
    worker = await spawn_node(str(HEARTBEAT_NOW_WORKER), live_coordinator.address)
    await worker.event("ready")
    job = await client.enqueue("q", "progress", lease_duration=LONG_LEASE_SECONDS)
    await worker.event("asked")

    # What the coordinator stored can only be polled; the scheduled beat would come after
    # 100 s, so 10 s of polling tells the two apart.
    checkpoints = []
    for _ in range(500):
        checkpoints.append((await client.get_job(job.job_id)).checkpoint)
        if checkpoints[-1] == b"step-1":
            break
        await asyncio.sleep(0.02)

    _, code = await worker.stop()
    assert checkpoints[-1] == b"step-1"
    assert code == 0
