"""Versioned task contracts in the Node SDK, against a real coordinator: the task types and
versions a Node worker declares in its Leases decide which jobs it gets, its handlers are
picked by the job's major version, and payloads are decoded for them
(tests/node/versions_worker.mjs, tests/node/contracts_script.mjs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conveyor import Client, JobState
from conveyor_server.main import Coordinator
from node_support import CONTRACTS_SCRIPT, VERSIONS_WORKER, NodeWorker, SpawnNode, require_node

require_node()

StartVersionsWorker = Callable[..., Awaitable[NodeWorker]]


@pytest.fixture
def start_versions_worker(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> StartVersionsWorker:
    """Starts versions_worker.mjs with the handlers given (see its header), once ready."""

    async def start(handlers: list[dict[str, str]], *, declare: bool = True) -> NodeWorker:
        args = [str(VERSIONS_WORKER), live_coordinator.address, json.dumps(handlers)]
        worker = await spawn_node(*args, *([] if declare else ["--no-declare"]))
        await worker.event("ready")
        return worker

    return start


async def run_node_script(*args: str) -> Any:
    """Runs contracts_script.mjs to the end; its one line of JSON output."""
    process = await asyncio.create_subprocess_exec(
        "node", str(CONTRACTS_SCRIPT), *args, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(10):
        stdout, _ = await process.communicate()
    assert process.returncode == 0
    return json.loads(stdout)


async def handled_by(client: Client, job_id: str) -> dict[str, Any]:
    """What the handler that ran the job reported (its JSON result)."""
    result: dict[str, Any] = json.loads(await client.wait_for_result(job_id, timeout=5))
    return result


async def test_worker_gets_older_minor_versions_and_never_a_newer_major(
    client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    v1 = await start_versions_worker([{"name": "send_email", "version": "1.2.0"}])
    # Enqueued first, so a Lease that ignored versions would hand it out before the 1.1.0 job.
    newer = await client.enqueue("q", "send_email", b"{}", task_version="2.0.0")
    older = await client.enqueue("q", "send_email", b"{}", task_version="1.1.0")

    ran_older = await handled_by(client, older.job_id)
    waiting = await client.get_job(newer.job_id)
    stats = (await client.get_queue("q")).stats
    await start_versions_worker([{"name": "send_email", "version": "2.0.0"}])
    ran_newer = await handled_by(client, newer.job_id)
    stopped, _ = await v1.stop()

    assert ran_older == {"handler": "send_email@1.2.0", "taskVersion": "1.1.0", "message": None}
    assert (waiting.state, waiting.attempt) == (JobState.AVAILABLE, 0)
    assert stats.awaiting_compatible_worker == 1
    assert ran_newer["handler"] == "send_email@2.0.0"
    assert stopped["processed"] == 1


async def test_worker_gets_only_the_task_types_it_has_handlers_for(
    client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    await start_versions_worker([{"name": "a"}])
    other = await client.enqueue("q", "b", max_attempts=1)
    own = await client.enqueue("q", "a", task_version="3.1.4")  # unversioned takes every version

    ran_own = await handled_by(client, own.job_id)
    untouched = await client.get_job(other.job_id)

    assert ran_own["handler"] == "a@*"
    assert (untouched.state, untouched.attempt) == (JobState.AVAILABLE, 0)


async def test_worker_that_declares_nothing_gets_every_task_type(
    client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    await start_versions_worker([{"name": "a"}], declare=False)
    other = await client.enqueue("q", "b", max_attempts=1)

    final = await client.wait_job(other.job_id, timeout=5)

    assert final.state == JobState.FAILED
    assert final.last_error is not None
    assert final.last_error.type == "UnknownTaskType"


async def test_handlers_of_one_task_type_are_picked_by_major_version(
    client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    await start_versions_worker(
        [{"name": "send_email", "version": "1.2.0"}, {"name": "send_email", "version": "2.0.0"}]
    )
    jobs = {
        version: await client.enqueue("q", "send_email", b"{}", task_version=version)
        for version in ("1.0.0", "2.0.0", None)
    }

    ran = {version: await handled_by(client, job.job_id) for version, job in jobs.items()}

    assert ran["1.0.0"]["handler"] == "send_email@1.2.0"
    assert ran["2.0.0"]["handler"] == "send_email@2.0.0"
    assert ran[None]["handler"] == "send_email@2.0.0"  # no version: the newest contract


async def test_decode_hands_the_handler_a_message_and_fails_undecodable_payloads_for_good(
    client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    await start_versions_worker([{"name": "json", "decode": "json"}])
    good = await client.enqueue("q", "json", b'{"to": "ada@example.com"}')
    bad = await client.enqueue("q", "json", b"not json", max_attempts=5)

    ran = await handled_by(client, good.job_id)
    failed = await client.wait_job(bad.job_id, timeout=5)

    assert ran["message"] == {"to": "ada@example.com"}
    assert (failed.state, failed.attempt) == (JobState.FAILED, 1)
    assert failed.last_error is not None
    assert failed.last_error.type == "PayloadDecodeError"
    assert failed.last_error.non_retryable
    assert "does not decode" in failed.last_error.message


async def test_protobufjs_message_type_names_the_task_and_decodes_its_payload(
    live_coordinator: Coordinator, client: Client, start_versions_worker: StartVersionsWorker
) -> None:
    await start_versions_worker([{"messageType": "acme.email.v1.SendEmail"}])

    # The Node Client takes the task type and version from the message type's option.
    enqueued = await run_node_script("enqueue", live_coordinator.address, "ada@example.com")
    ran = await handled_by(client, enqueued["jobId"])
    job = await client.get_job(enqueued["jobId"])

    assert (job.task_type, job.task_version) == ("send_email", "1.2.0")
    assert ran == {
        "handler": "acme.email.v1.SendEmail",
        "taskVersion": "1.2.0",
        "message": {"to": "ada@example.com"},
    }


async def test_registration_refuses_clashing_or_malformed_versions() -> None:
    refused = await run_node_script("registration")

    assert refused == {
        "sameMajor": "task type 't' already has a handler for major version 1 (1.0.0); "
        "register one handler per major version",
        "versionedAndNot": "task type 't' already has a handler",
        "badVersion": "'1.2' is not a semantic version: give MAJOR.MINOR.PATCH, e.g. 1.2.0",
        "messageTypeWithVersion": "a message type brings its own version and decoding; "
        "pass neither",
        "twoMajors": None,
    }
