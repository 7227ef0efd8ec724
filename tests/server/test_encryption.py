"""Encryption at rest (CONVEYOR_ENCRYPTION_KEYS): payloads, results and checkpoints go
through a real coordinator and come back as sent, while the database rows hold none of them;
keys rotate (old keys open, the first one seals), and a missing key is a clear error that
never quotes a value or a key."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.cli import main
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.encryption import KEYS_VARIABLE, Keyring, keyring_from_env
from conveyor_server.main import Coordinator
from server_wire import Wire, refused

PAYLOAD = b"canary-payload-7f3a: card 4111 1111 1111 1111"
CHECKPOINT = b"canary-checkpoint-91bc: row 1234 of 9000"
RESULT = b"canary-result-5d20: total 42.17 EUR"
KEY_1 = base64.b64encode(bytes(range(32))).decode()
KEY_2 = base64.b64encode(bytes(range(100, 132))).decode()


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    """The `coordinator` fixture of this module encrypts with key k1."""
    return replace(server_config, encryption=keyring(f"k1:{KEY_1}"))


def keyring(value: str) -> Keyring:
    found = keyring_from_env({KEYS_VARIABLE: value})
    assert found is not None
    return found


@pytest.fixture
def start(server_config: ServerConfig, clock: FakeClock) -> Callable[[str | None], Any]:
    """Starts a coordinator on the test's database with the given CONVEYOR_ENCRYPTION_KEYS
    value (None: no encryption), yielding a Wire on it; stops it after."""

    @asynccontextmanager
    async def started(keys: str | None) -> AsyncIterator[Wire]:
        config = replace(server_config, encryption=keyring(keys) if keys else None)
        coordinator = await Coordinator.start(config, clock=clock)
        try:
            async with grpc.aio.insecure_channel(coordinator.address) as channel:
                yield Wire(rpc.CoordinatorServiceStub(channel))
        finally:
            await coordinator.stop(grace=1.0)

    return started


def stored(db_url: str, job_id: str) -> dict[str, bytes | None]:
    """The job's payload, result and checkpoint columns as the database holds them."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT payload, result, checkpoint FROM jobs WHERE id = :id"),
                {"id": job_id},
            ).one()
    finally:
        engine.dispose()
    return {
        "payload": None if row.payload is None else bytes(row.payload),
        "result": None if row.result is None else bytes(row.result),
        "checkpoint": None if row.checkpoint is None else bytes(row.checkpoint),
    }


async def run_job(wire: Wire) -> str:
    """Enqueues, leases, checkpoints and completes one job; returns its id."""
    job_id = (await wire.enqueue(payload=PAYLOAD)).job_id
    leased = await wire.lease_one()
    assert leased.payload == PAYLOAD
    await wire.stub.Heartbeat(
        pb.HeartbeatRequest(job_id=job_id, lease_token=leased.lease_token, checkpoint=CHECKPOINT)
    )
    await wire.succeed(leased, result=RESULT)
    return job_id


async def test_values_round_trip_and_the_rows_hold_none_of_them(
    start: Callable[[str | None], Any], db_url: str
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        job_id = await run_job(wire)
        job = await wire.get(job_id)
        assert (job.payload, job.checkpoint, job.result) == (PAYLOAD, CHECKPOINT, RESULT)
        [listed] = await wire.jobs()
        assert (listed.payload, listed.checkpoint, listed.result) == (PAYLOAD, CHECKPOINT, RESULT)
    for field, value in stored(db_url, job_id).items():
        assert value is not None, field
        assert b"canary" not in value, field
        assert value.startswith(b"\x89CVE\x01\x02k1"), field


async def test_a_checkpoint_reaches_the_next_attempt_decrypted(
    coordinator: Coordinator, wire: Wire, clock: FakeClock
) -> None:
    await wire.enqueue(payload=PAYLOAD, max_attempts=2)
    leased = await wire.lease_one()
    await wire.stub.Heartbeat(
        pb.HeartbeatRequest(
            job_id=leased.job_id, lease_token=leased.lease_token, checkpoint=CHECKPOINT
        )
    )
    await wire.fail(leased)
    clock.advance(3600)
    await coordinator.waker.run_once(clock.now())
    again = await wire.lease_one()
    assert (again.payload, again.checkpoint, again.attempt) == (PAYLOAD, CHECKPOINT, 2)


async def test_a_heartbeat_asking_for_the_checkpoint_gets_it_decrypted(wire: Wire) -> None:
    await wire.enqueue(payload=PAYLOAD)
    leased = await wire.lease_one()
    await wire.heartbeat(leased, checkpoint=CHECKPOINT)
    assert (await wire.heartbeat(leased, return_checkpoint=True)).checkpoint == CHECKPOINT


async def test_asking_for_a_checkpoint_without_its_key_is_refused_and_changes_nothing(
    start: Callable[[str | None], Any],
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        await wire.enqueue(payload=PAYLOAD)
        leased = await wire.lease_one()
        await wire.heartbeat(leased, checkpoint=CHECKPOINT)
    async with start(f"k2:{KEY_2}") as wire:
        message = await refused(
            wire.heartbeat(leased, return_checkpoint=True), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "checkpoint" in message and "canary" not in message
        assert (await wire.heartbeat(leased)).lease_expires_at  # one not asking still goes
    async with start(f"k1:{KEY_1}") as wire:
        assert (await wire.heartbeat(leased, return_checkpoint=True)).checkpoint == CHECKPOINT


async def test_an_idempotent_enqueue_compares_the_decrypted_payload(
    start: Callable[[str | None], Any],
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        first = await wire.enqueue(payload=PAYLOAD, idempotency_key="once")
        again = await wire.enqueue(payload=PAYLOAD, idempotency_key="once")
        assert again.job_id == first.job_id and again.deduplicated
        message = await refused(
            wire.enqueue(payload=b"other", idempotency_key="once"), grpc.StatusCode.ALREADY_EXISTS
        )
        assert "canary" not in message


async def test_a_repeated_receipt_with_the_same_result_is_a_replay(
    start: Callable[[str | None], Any],
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        await wire.enqueue(payload=PAYLOAD)
        leased = await wire.lease_one()
        await wire.succeed(leased, result=RESULT)
        assert (await wire.succeed(leased, result=RESULT)).state == pb.JOB_STATE_SUCCEEDED


async def test_plaintext_rows_written_before_encryption_still_read(
    start: Callable[[str | None], Any], db_url: str
) -> None:
    async with start(None) as wire:
        job_id = await run_job(wire)
        # A plaintext value that looks like a header is kept unambiguous.
        tricky = (await wire.enqueue(payload=b"\x89CVE\x01\x02k1 not sealed")).job_id
    assert stored(db_url, job_id)["payload"] == PAYLOAD
    async with start(f"k1:{KEY_1}") as wire:
        job = await wire.get(job_id)
        assert (job.payload, job.checkpoint, job.result) == (PAYLOAD, CHECKPOINT, RESULT)
        assert (await wire.get(tricky)).payload == b"\x89CVE\x01\x02k1 not sealed"


async def test_rotation_old_keys_open_and_the_first_key_seals(
    start: Callable[[str | None], Any], db_url: str
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        old = await run_job(wire)
    async with start(f"k2:{KEY_2},k1:{KEY_1}") as wire:
        job = await wire.get(old)
        assert (job.payload, job.checkpoint, job.result) == (PAYLOAD, CHECKPOINT, RESULT)
        new = await run_job(wire)
    assert stored(db_url, old)["payload"].startswith(b"\x89CVE\x01\x02k1")  # type: ignore[union-attr]
    for field, value in stored(db_url, new).items():
        assert value is not None and value.startswith(b"\x89CVE\x01\x02k2"), field


async def test_a_missing_key_is_a_clear_error_without_the_value_or_a_key(
    start: Callable[[str | None], Any],
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        sealed = await run_job(wire)
        waiting = (await wire.enqueue(payload=PAYLOAD)).job_id
    for keys in (f"k2:{KEY_2}", None):
        async with start(keys) as wire:
            message = await refused(wire.get(sealed), grpc.StatusCode.FAILED_PRECONDITION)
            assert "payload" in message and sealed in message
            if keys:
                assert "'k1'" in message and KEYS_VARIABLE in message
            for secret in ("canary", KEY_1, KEY_2):
                assert secret not in message
            # The job that cannot be read is never handed out, and stays as it was.
            assert await wire.lease() == []
            await refused(
                wire.stub.CancelJob(pb.CancelJobRequest(job_id=waiting)),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
    async with start(f"k1:{KEY_1}") as wire:
        assert (await wire.get(waiting)).state == pb.JOB_STATE_AVAILABLE
        assert (await wire.lease_one()).payload == PAYLOAD


async def test_a_key_of_the_same_id_but_other_bytes_does_not_open(
    start: Callable[[str | None], Any],
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        sealed = (await wire.enqueue(payload=PAYLOAD)).job_id
    async with start(f"k1:{KEY_2}") as wire:
        message = await refused(wire.get(sealed), grpc.StatusCode.FAILED_PRECONDITION)
        assert "does not authenticate" in message and "canary" not in message


async def test_a_value_moved_to_another_job_does_not_open(
    start: Callable[[str | None], Any], db_url: str
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        first = (await wire.enqueue(payload=PAYLOAD)).job_id
        second = (await wire.enqueue(payload=b"harmless")).job_id
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE jobs SET payload = :p WHERE id = :id"),
                {"p": stored(db_url, first)["payload"], "id": second},
            )
    finally:
        engine.dispose()
    async with start(f"k1:{KEY_1}") as wire:
        await refused(wire.get(second), grpc.StatusCode.FAILED_PRECONDITION)
        assert (await wire.get(first)).payload == PAYLOAD


BAD_KEYS = {
    "no key id": KEY_1,
    "not base64": "k1:not-base64!!",
    "wrong length": "k1:" + base64.b64encode(b"short").decode(),
    "id listed twice": f"k1:{KEY_1},k1:{KEY_2}",
    "bad id": f"k 1:{KEY_1}",
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_bad_key_config_exits_2_naming_the_variable(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEYS_VARIABLE, BAD_KEYS[case])
    code = main(["serve", "--db", f"sqlite:///{tmp_path}/c.db", "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code == 2
    assert KEYS_VARIABLE in err
    assert KEY_1 not in err and KEY_2 not in err


def test_the_keyring_repr_shows_key_ids_only() -> None:
    ring = keyring(f"k1:{KEY_1},k2:{KEY_2}")
    assert ring.current_id == "k1"
    assert KEY_1 not in repr(ring) and "k2" in repr(ring)


async def test_reencrypt_rewrites_old_keys_and_plaintext_under_the_current_key(
    start: Callable[[str | None], Any],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with start(None) as wire:
        plain = await run_job(wire)
    async with start(f"k1:{KEY_1}") as wire:
        old = await run_job(wire)
    monkeypatch.setenv(KEYS_VARIABLE, f"k2:{KEY_2},k1:{KEY_1}")
    assert main(["reencrypt", "--db", db_url, "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "values rewritten under key 'k2': 6" in out
    for job_id in (plain, old):
        for field, value in stored(db_url, job_id).items():
            assert value is not None and value.startswith(b"\x89CVE\x01\x02k2"), field
    # Nothing is left under k1: the old key can go.
    async with start(f"k2:{KEY_2}") as wire:
        for job_id in (plain, old):
            job = await wire.get(job_id)
            assert (job.payload, job.checkpoint, job.result) == (PAYLOAD, CHECKPOINT, RESULT)
    assert main(["reencrypt", "--db", db_url]) == 0
    assert "values rewritten under key 'k2': 0" in capsys.readouterr().out


async def test_reencrypt_reports_values_whose_key_is_missing(
    start: Callable[[str | None], Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start(f"k1:{KEY_1}") as wire:
        await wire.enqueue(payload=PAYLOAD)
    monkeypatch.setenv(KEYS_VARIABLE, f"k2:{KEY_2}")
    assert main(["reencrypt", "--db", db_url]) == 1
    monkeypatch.delenv(KEYS_VARIABLE)
    assert main(["reencrypt", "--db", db_url]) == 2


def stored_template(db_url: str, name: str) -> bytes:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            value = conn.execute(
                sa.text("SELECT job_spec FROM schedules WHERE name = :n"), {"n": name}
            ).scalar_one()
    finally:
        engine.dispose()
    return bytes(value)


async def test_a_schedules_job_template_is_sealed_and_its_fires_carry_the_payload(
    coordinator: Coordinator, wire: Wire, clock: FakeClock, db_url: str
) -> None:
    template = pb.JobSpec(queue="reports", task_type="build", payload=PAYLOAD)
    created = await wire.stub.CreateSchedule(
        pb.CreateScheduleRequest(
            schedule=pb.Schedule(name="nightly", cron="0 9 * * *", job=template)
        )
    )
    sealed = stored_template(db_url, "nightly")
    assert b"canary" not in sealed and sealed.startswith(b"\x89CVE\x01\x02k1")
    got = await wire.stub.GetSchedule(pb.GetScheduleRequest(name="nightly"))
    assert got.job.payload == PAYLOAD
    clock.set(created.next_fire_at.ToMicroseconds())
    await coordinator.cron.run_once(clock.now())
    [job] = await wire.jobs("reports")
    assert job.payload == PAYLOAD
    assert b"canary" not in stored(db_url, job.job_id)["payload"]  # type: ignore[operator]


async def test_reencrypt_covers_schedule_templates(
    start: Callable[[str | None], Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = pb.JobSpec(queue="reports", task_type="build", payload=PAYLOAD)
    async with start(None) as wire:
        await wire.stub.CreateSchedule(
            pb.CreateScheduleRequest(schedule=pb.Schedule(name="n", cron="0 9 * * *", job=template))
        )
    assert PAYLOAD in stored_template(db_url, "n")
    monkeypatch.setenv(KEYS_VARIABLE, f"k2:{KEY_2}")
    assert main(["reencrypt", "--db", db_url]) == 0
    assert stored_template(db_url, "n").startswith(b"\x89CVE\x01\x02k2")
    async with start(None) as wire:
        message = await refused(
            wire.stub.GetSchedule(pb.GetScheduleRequest(name="n")),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "job template of schedule 'n'" in message and "canary" not in message
    async with start(f"k2:{KEY_2}") as wire:
        got = await wire.stub.GetSchedule(pb.GetScheduleRequest(name="n"))
        assert got.job.payload == PAYLOAD
