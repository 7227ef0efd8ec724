"""The Node Client retries enqueue and enqueueBatch on UNAVAILABLE only when every job has an
idempotency key (given, or generated with autoIdempotencyKeys), as the Python one does: a
real coordinator is down when the call starts and comes back on the same database and port
while tests/node/retry_client_script.mjs retries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conveyor import Client, Job
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import SystemClock
from conveyor_server.main import Coordinator
from node_support import HERE, NodeWorker, SpawnNode, require_node

require_node()

RETRY_CLIENT_SCRIPT = HERE / "retry_client_script.mjs"
# How long the coordinator stays down while the client retries (or gives up).
DOWNTIME = 0.3


class Outage:
    """A coordinator that is stopped, then started again on the same database and port."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.coordinator: Coordinator | None = None
        self.address = ""

    async def start(self) -> None:
        listen = self.address or self.config.listen
        config = dataclasses.replace(self.config, listen=listen)
        self.coordinator = await Coordinator.start(config, clock=SystemClock())
        self.address = self.coordinator.address

    async def stop(self) -> None:
        if self.coordinator is not None:
            await self.coordinator.stop(grace=1.0)
            self.coordinator = None

    async def jobs(self) -> list[Job]:
        async with Client(self.address) as client:
            return (await client.list_jobs("q")).jobs


@pytest.fixture
async def outage(server_config: ServerConfig) -> AsyncIterator[Outage]:
    """A coordinator that ran once (to learn its port) and is down now."""
    outage = Outage(server_config)
    await outage.start()
    await outage.stop()
    yield outage
    await outage.stop()


async def call_through_outage(
    spawn_node: SpawnNode, outage: Outage, mode: str, *, restart: bool
) -> dict[str, Any]:
    node: NodeWorker = await spawn_node(str(RETRY_CLIENT_SCRIPT), outage.address, mode)
    await node.event("calling")
    if restart:
        await asyncio.sleep(DOWNTIME)  # the outage the client must ride out (not a sync point)
        await outage.start()
    done = await node.event("done", timeout=60)
    assert await node.process.wait() == 0
    if not restart:
        await outage.start()
    return done


async def test_enqueue_with_a_key_is_retried_until_the_coordinator_is_back(
    spawn_node: SpawnNode, outage: Outage
) -> None:
    done = await call_through_outage(spawn_node, outage, "key", restart=True)

    jobs = await outage.jobs()
    assert [job.job_id for job in jobs] == [done["results"][0]["jobId"]]
    assert jobs[0].idempotency_key == "order-17"


async def test_auto_idempotency_keys_let_an_enqueue_without_a_key_be_retried(
    spawn_node: SpawnNode, outage: Outage
) -> None:
    done = await call_through_outage(spawn_node, outage, "auto", restart=True)

    jobs = await outage.jobs()
    assert [job.job_id for job in jobs] == [done["results"][0]["jobId"]]
    assert (jobs[0].idempotency_key or "").startswith("auto-")


async def test_enqueue_batch_with_every_key_is_retried_until_the_coordinator_is_back(
    spawn_node: SpawnNode, outage: Outage
) -> None:
    done = await call_through_outage(spawn_node, outage, "batch", restart=True)

    assert len(done["results"]) == 2
    assert len(await outage.jobs()) == 2


async def test_enqueue_without_a_key_is_not_retried(spawn_node: SpawnNode, outage: Outage) -> None:
    done = await call_through_outage(spawn_node, outage, "none", restart=False)

    assert done["error"] == "UNAVAILABLE"
    assert await outage.jobs() == []
