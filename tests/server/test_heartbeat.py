"""Heartbeat on the wire: extending a lease, and checkpoints carried to the next attempt."""

from __future__ import annotations

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from server_wire import S, Wire, micros, refused, seconds


async def test_a_heartbeat_extends_the_lease_by_extend_by_from_now(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(30))
    leased = await wire.lease_one()
    clock.advance(10)
    reply = await wire.heartbeat(leased, extend_by=seconds(120))
    assert micros(reply.lease_expires_at) == clock.now() + 120 * S
    assert micros((await wire.get(leased.job_id)).lease_expires_at) == clock.now() + 120 * S
    assert not reply.cancel_requested


async def test_a_heartbeat_without_extend_by_extends_by_the_jobs_lease_duration(
    wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(45))
    leased = await wire.lease_one()
    clock.advance(20)
    reply = await wire.heartbeat(leased)
    assert micros(reply.lease_expires_at) == clock.now() + 45 * S


async def test_an_extended_lease_outlives_its_original_expiry(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    leased = await wire.lease_one()
    clock.advance(8)
    await wire.heartbeat(leased, extend_by=seconds(60))
    clock.advance(30)  # well past the original expiry, inside the extension
    await coordinator.reaper.run_once(clock.now())
    assert (await wire.get(leased.job_id)).state == pb.JOB_STATE_LEASED
    assert (await wire.succeed(leased)).state == pb.JOB_STATE_SUCCEEDED


async def test_a_heartbeat_never_shortens_the_lease(wire: Wire, clock: FakeClock) -> None:
    await wire.enqueue(lease_duration=seconds(60))
    leased = await wire.lease_one()
    clock.advance(10)
    reply = await wire.heartbeat(leased, extend_by=seconds(5))
    assert micros(reply.lease_expires_at) == micros(leased.lease_expires_at)
    assert micros((await wire.get(leased.job_id)).lease_expires_at) == micros(
        leased.lease_expires_at
    )


async def test_a_checkpoint_sent_with_a_heartbeat_is_stored(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"step-2")
    assert (await wire.get(leased.job_id)).checkpoint == b"step-2"


async def test_a_heartbeat_without_a_checkpoint_keeps_the_stored_one(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"step-1")
    await wire.heartbeat(leased, checkpoint=b"step-2")
    await wire.heartbeat(leased)
    assert (await wire.get(leased.job_id)).checkpoint == b"step-2"


async def test_the_checkpoint_is_handed_to_the_next_attempt_after_a_failure(
    wire: Wire,
) -> None:
    await wire.enqueue()
    first = await wire.lease_one()
    assert first.checkpoint == b""
    await wire.heartbeat(first, checkpoint=b"step-2")
    await wire.fail(first, retry_after=seconds(0))
    second = await wire.lease_one()
    assert (second.job_id, second.attempt) == (first.job_id, 2)
    assert second.checkpoint == b"step-2"


async def test_the_checkpoint_is_handed_to_the_next_attempt_after_a_lease_expiry(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(lease_duration=seconds(10))
    first = await wire.lease_one()
    await wire.heartbeat(first, checkpoint=b"halfway")
    clock.advance(11)
    await coordinator.reaper.run_once(clock.now())
    second = await wire.lease_one()
    assert (second.attempt, second.checkpoint) == (2, b"halfway")


async def test_a_zero_extend_by_is_invalid(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    message = await refused(
        wire.heartbeat(leased, extend_by=seconds(0)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "extend_by" in message


async def test_a_heartbeat_asking_for_the_checkpoint_gets_the_stored_one(wire: Wire) -> None:
    """For a worker handed the job without it (a pushed job's request carries only the
    payload)."""
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"step-1")
    reply = await wire.heartbeat(leased, return_checkpoint=True)
    assert reply.HasField("checkpoint") and reply.checkpoint == b"step-1"


async def test_a_heartbeat_sending_a_checkpoint_and_asking_gets_the_one_it_sent(
    wire: Wire,
) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"step-1")
    reply = await wire.heartbeat(leased, checkpoint=b"step-2", return_checkpoint=True)
    assert reply.checkpoint == b"step-2"
    assert (await wire.get(leased.job_id)).checkpoint == b"step-2"


async def test_a_heartbeat_not_asking_for_the_checkpoint_gets_none(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    reply = await wire.heartbeat(leased, checkpoint=b"step-1")
    assert not reply.HasField("checkpoint")
    assert not (await wire.heartbeat(leased)).HasField("checkpoint")


async def test_a_heartbeat_asking_when_no_checkpoint_is_stored_gets_none(wire: Wire) -> None:
    await wire.enqueue()
    leased = await wire.lease_one()
    reply = await wire.heartbeat(leased, return_checkpoint=True)
    assert not reply.HasField("checkpoint")


async def test_a_heartbeat_asking_after_the_checkpoint_was_cleared_gets_none(
    wire: Wire,
) -> None:
    """An empty checkpoint clears the stored one (docs/protocol.md): none comes back."""
    await wire.enqueue()
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=b"step-1")
    await wire.heartbeat(leased, checkpoint=b"")
    assert not (await wire.heartbeat(leased, return_checkpoint=True)).HasField("checkpoint")
    cleared_and_asked = await wire.heartbeat(leased, checkpoint=b"", return_checkpoint=True)
    assert not cleared_and_asked.HasField("checkpoint")


async def test_asking_for_the_checkpoint_with_a_stale_token_is_fenced(wire: Wire) -> None:
    await wire.enqueue(max_attempts=2)
    first = await wire.lease_one()
    await wire.heartbeat(first, checkpoint=b"step-1")
    await wire.fail(first, retry_after=seconds(0))
    await wire.lease_one()
    message = await refused(
        wire.heartbeat(first, return_checkpoint=True), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "step-1" not in message


async def test_a_heartbeat_batch_refuses_an_item_asking_for_the_checkpoint(
    wire: Wire, clock: FakeClock
) -> None:
    """A batch of checkpoints could pass the reply size limit: only Heartbeat returns one.
    The refused item changes nothing; the others are judged as usual."""
    for _ in range(2):
        await wire.enqueue(lease_duration=seconds(30))
    asking, plain = await wire.lease(max_jobs=2)
    clock.advance(5)
    reply = await wire.stub.HeartbeatBatch(
        pb.HeartbeatBatchRequest(
            heartbeats=[
                pb.HeartbeatRequest(
                    job_id=asking.job_id, lease_token=asking.lease_token, return_checkpoint=True
                ),
                pb.HeartbeatRequest(job_id=plain.job_id, lease_token=plain.lease_token),
            ]
        )
    )
    assert [r.code for r in reply.results] == [grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    assert "heartbeats[0].return_checkpoint" in reply.results[0].message
    assert micros(reply.results[1].response.lease_expires_at) == clock.now() + 30 * S
    assert (await wire.get(asking.job_id)).lease_expires_at == asking.lease_expires_at
