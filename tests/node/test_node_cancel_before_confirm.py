"""A job cancelled between its claim and the Node worker's lease confirmation: the
confirmation answers cancel_requested, and the worker reports the job without running it.

The timing is made certain, not waited for: tests/node/cancel_before_confirm_worker.mjs holds
each Lease reply in a gRPC client interceptor until CancelJob has returned, so the worker's
confirming HeartbeatBatch always goes out after the cancel."""

from __future__ import annotations

from conveyor import Client, JobState
from conveyor.models import Outcome
from conveyor_server.main import Coordinator
from node_support import HERE, SpawnNode, require_node

require_node()

CANCEL_BEFORE_CONFIRM_WORKER = HERE / "cancel_before_confirm_worker.mjs"


async def test_a_job_cancelled_before_its_lease_is_confirmed_never_runs_and_ends_cancelled(
    live_coordinator: Coordinator, client: Client, spawn_node: SpawnNode
) -> None:
    worker = await spawn_node(str(CANCEL_BEFORE_CONFIRM_WORKER), live_coordinator.address)
    await worker.event("ready")
    # A 1 s lease: a worker that ran the job anyway would be told to stop at its first
    # heartbeat, a third of a second later, and the job would end CANCELLED all the same.
    job = await client.enqueue("q", "work", lease_duration=1)
    cancelled = await worker.event("cancelled")
    final = await client.wait_job(job.job_id, timeout=5)

    worker.terminate()
    events = await worker.events_until("stopped")
    assert await worker.process.wait() == 0

    assert cancelled["jobId"] == job.job_id
    assert [e for e in events if e["event"] in ("handled", "error")] == []
    assert final.state is JobState.CANCELLED
    assert [a.outcome for a in final.attempts] == [Outcome.FAILURE]
    assert final.last_error is not None and final.last_error.type == "Cancelled"
