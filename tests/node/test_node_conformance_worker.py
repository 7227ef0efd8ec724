"""The Node SDK's conformance worker (sdk/node/conformance/worker.mjs), run as the
conformance kit runs it (CONVEYOR_ADDRESS, CONVEYOR_QUEUE), through a few of the behaviours
docs/conformance.md asks of it, straight against a coordinator: independent of the kit, which
runs them all (`conveyor conformance --worker-cmd "node sdk/node/conformance/worker.mjs"`)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest
from conveyor import Client, JobState, RetryPolicy
from conveyor_server.main import Coordinator
from node_support import CONFORMANCE_WORKER, NodeWorker, SpawnNode, require_node

require_node()

QUEUE = "conformance"


@pytest.fixture
async def conformance_worker(live_coordinator: Coordinator, spawn_node: SpawnNode) -> NodeWorker:
    env = {
        **os.environ,
        "CONVEYOR_ADDRESS": live_coordinator.address,
        "CONVEYOR_QUEUE": QUEUE,
        "CONVEYOR_SHUTDOWN_GRACE_MS": "500",
    }
    return await spawn_node(str(CONFORMANCE_WORKER), env=env)


async def test_echo_and_fail_once(client: Client, conformance_worker: NodeWorker) -> None:
    payload = b"conformance \x00\xff bytes"
    echo = await client.enqueue(QUEUE, "conformance.echo", payload)
    fast_retry = RetryPolicy(initial_backoff=timedelta(milliseconds=10), jitter=0.0)
    flaky = await client.enqueue(QUEUE, "conformance.fail_once", retry_policy=fast_retry)

    echoed = await client.wait_for_result(echo.job_id, timeout=10)
    ok = await client.wait_for_result(flaky.job_id, timeout=10)
    first_attempt = (await client.get_job(flaky.job_id)).attempts[0]

    assert echoed == payload
    assert ok == b"ok"
    assert first_attempt.error is not None and not first_attempt.error.non_retryable


async def test_versioned_runs_older_minor_versions_only_and_stops_on_sigterm(
    client: Client, conformance_worker: NodeWorker
) -> None:
    newer = await client.enqueue(QUEUE, "conformance.versioned", b"v2", task_version="2.0.0")
    older = await client.enqueue(QUEUE, "conformance.versioned", b"v1", task_version="1.0.0")

    result = await client.wait_for_result(older.job_id, timeout=10)
    waiting = await client.get_job(newer.job_id)
    conformance_worker.terminate()
    async with asyncio.timeout(10):
        code = await conformance_worker.process.wait()

    assert result == b"v1"  # the worker declares 1.1.0, so it takes 1.0.0 ...
    assert (waiting.state, waiting.attempt) == (JobState.AVAILABLE, 0)  # ... and never 2.0.0
    assert code == 0
