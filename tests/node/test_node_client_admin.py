"""The Node Client's calls beyond enqueue and wait (sdk/node/src/client.js): listing, retry,
queues, schedules and task contracts, against a real coordinator on port 0. Each test runs
one scenario of tests/node/admin_client_script.mjs and checks what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conveyor_server.main import Coordinator
from node_support import ADMIN_CLIENT_SCRIPT, HERE, SpawnNode, require_node

require_node()

REPO = HERE.parent.parent


async def run_scenario(
    spawn_node: SpawnNode, scenario: str, address: str, *args: str
) -> dict[str, Any]:
    node = await spawn_node(str(ADMIN_CLIENT_SCRIPT), scenario, address, *args)
    assert node.process.stdout is not None
    output = await node.process.stdout.read()
    assert await node.process.wait() == 0
    result: dict[str, Any] = json.loads(output)
    return result


async def test_lists_pages_cancels_and_retries_jobs(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> None:
    seen = await run_scenario(spawn_node, "jobs", live_coordinator.address)

    newest_first = list(reversed(seen["ids"]))
    assert seen["firstPage"] == newest_first[:2]
    assert seen["hasNextPage"]
    assert seen["iterated"] == newest_first
    assert seen["cancelledState"] == "JOB_STATE_CANCELLED"
    assert seen["onlyCancelled"] == [seen["ids"][0]]
    assert seen["retriedState"] == "JOB_STATE_AVAILABLE"
    assert seen["retryOfWaiting"] == "FAILED_PRECONDITION"


async def test_sets_pauses_resumes_and_clears_queue_settings(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> None:
    seen = await run_scenario(spawn_node, "queues", live_coordinator.address)

    assert seen["rateLimit"] == {"rate": 5, "burst": 10}
    assert seen["maxConcurrency"] == 3
    assert seen["leaseDurationSeconds"] == 45
    assert seen["maxAttempts"] == 7
    assert seen["initialBackoffSeconds"] == 2
    assert seen["retentionSucceededSeconds"] == 3600
    assert (seen["pausedAfterPause"], seen["heldByPause"]) == (True, True)
    assert seen["pausedAfterResume"] is False
    assert (seen["clearedRate"], seen["clearedLease"]) == (0, None)
    assert seen["keptConcurrency"] == 3
    assert "mail" in seen["listed"]


async def test_creates_reads_updates_pauses_and_deletes_a_schedule(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> None:
    seen = await run_scenario(spawn_node, "schedules", live_coordinator.address)

    assert seen["createdCron"] == "0 3 * * *"
    assert seen["timezone"] == "Europe/Paris"
    assert seen["overlapPolicy"] == "OVERLAP_POLICY_SKIP"
    assert seen["template"] == {
        "queue": "reports",
        "taskType": "nightly",
        "payload": "p",
        "priority": 2,
    }
    assert seen["hasNextFire"]
    assert (seen["updatedCron"], seen["updatedMisfire"]) == ("30 4 * * *", "MISFIRE_POLICY_SKIP")
    assert seen["keptTimezone"] == "Europe/Paris"
    assert (seen["pausedAfterPause"], seen["pausedAfterResume"]) == (True, False)
    assert seen["listed"] == ["nightly-report"]
    assert seen["afterDelete"] == "NOT_FOUND"


def descriptor_set(tmp_path: Path) -> Path:
    """tests/node/protos/acme_email.proto and its imports, as `protoc --include_imports
    --descriptor_set_out` writes them."""
    out = tmp_path / "acme_email.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{HERE / 'protos'}",
            f"-I{REPO / 'protos'}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "acme_email.proto",
        ],
        check=True,
    )
    return out


async def test_registers_a_task_type_from_a_descriptor_set_and_reads_it_back(
    live_coordinator: Coordinator, spawn_node: SpawnNode, tmp_path: Path
) -> None:
    descriptors = descriptor_set(tmp_path)

    seen = await run_scenario(spawn_node, "taskTypes", live_coordinator.address, str(descriptors))

    assert seen["registered"] == ["send_email", "1.2.0", "acme.email.v1.SendEmail"]
    assert (seen["again"], seen["byName"]) == ("1.2.0", "1.2.0")
    assert seen["contradicting"] == "INVALID_ARGUMENT"
    assert seen["got"] == ["send_email", "1.2.0", True]
    assert seen["listed"] == ["send_email@1.2.0"]


async def test_channel_options_reach_the_grpc_channel(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> None:
    seen = await run_scenario(spawn_node, "channelOptions", live_coordinator.address)

    assert seen == {"defaultLimit": 4096, "small": "RESOURCE_EXHAUSTED"}
