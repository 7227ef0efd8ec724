"""Versioned task contracts in the SDK: registering message types, enqueueing messages, typed
handlers, and the worker declaring (and routing by) the versions it implements.

The messages come from tests/contracts/protos/acme/email/v1/email.proto, compiled at session
start (the `email_pb2` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import ModuleType

import grpc
import pytest
from conveyor import Client, JobContext, JobState, Worker, WorkerConfig
from conveyor._contracts import descriptor_set
from conveyor.testing import run_handler
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet

StartWorker = Callable[[Worker], "asyncio.Task[None]"]


def _worker(address: str, queue: str = "q", **config: object) -> Worker:
    return Worker(
        address,
        [queue],
        config=WorkerConfig(concurrency=2, shutdown_grace=1.0, lease_wait=1.0, **config),  # type: ignore[arg-type]
    )


def _email(email_pb2: ModuleType, to: str = "ada@example.com") -> object:
    return email_pb2.SendEmail(to=email_pb2.Address(email=to), subject="hello")


def _by_name(files: FileDescriptorSet) -> dict[str, FileDescriptorProto]:
    return {f.name: f for f in files.file}


# -- descriptors (no coordinator) -------------------------------------------------------------


def test_descriptor_set_lists_every_import_before_the_file_that_imports_it(
    email_pb2: ModuleType,
) -> None:
    files = descriptor_set(email_pb2.SendEmail).file
    position = {f.name: i for i, f in enumerate(files)}

    assert files[-1].name == "acme/email/v1/email.proto"
    assert {
        "conveyor/v1/task.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
    } <= set(position)
    assert all(position[d] < position[f.name] for f in files for d in f.dependency)


# -- registry --------------------------------------------------------------------------------


async def test_register_and_get_round_trip_the_message_descriptors(
    client: Client, email_pb2: ModuleType
) -> None:
    await client.register_task_type(email_pb2.SendEmail)

    got = await client.get_task_type("send_email", "1.2.0")

    assert (got.name, got.version, got.message_type) == (
        "send_email",
        "1.2.0",
        "acme.email.v1.SendEmail",
    )
    # The same files; the coordinator may keep them in an order of its own.
    assert _by_name(got.descriptors) == _by_name(descriptor_set(email_pb2.SendEmail))


async def test_get_without_a_version_returns_the_highest_registered(
    client: Client, email_pb2: ModuleType
) -> None:
    await client.register_task_type(email_pb2.SendEmail)
    await client.register_task_type(email_pb2.SendEmailV2)

    got = await client.get_task_type("send_email")

    assert (got.version, got.message_type) == ("2.0.0", "acme.email.v1.SendEmailV2")


async def test_name_and_version_may_be_given_for_a_message_without_the_task_option(
    client: Client, email_pb2: ModuleType
) -> None:
    registered = await client.register_task_type(email_pb2.Unmarked, name="note", version="0.1.0")

    assert (registered.name, registered.version, registered.message_type) == (
        "note",
        "0.1.0",
        "acme.email.v1.Unmarked",
    )


async def test_registering_a_message_without_the_task_option_says_how_to_add_it(
    client: Client, email_pb2: ModuleType
) -> None:
    with pytest.raises(ValueError, match=r"option \(conveyor.v1.task\)"):
        await client.register_task_type(email_pb2.Unmarked)


async def test_list_task_types_returns_every_registered_version(
    client: Client, email_pb2: ModuleType
) -> None:
    await client.register_task_type(email_pb2.SendEmailV2)
    await client.register_task_type(email_pb2.SendEmail)

    page = await client.list_task_types()

    assert [(t.name, t.version) for t in page.task_types] == [
        ("send_email", "1.2.0"),
        ("send_email", "2.0.0"),
    ]


# -- enqueue ---------------------------------------------------------------------------------


async def test_enqueueing_a_message_takes_task_type_and_version_from_its_option(
    client: Client, email_pb2: ModuleType
) -> None:
    message = _email(email_pb2)

    enqueued = await client.enqueue("q", message)  # type: ignore[arg-type]
    job = await client.get_job(enqueued.job_id)

    assert (job.task_type, job.task_version) == ("send_email", "1.2.0")
    assert job.payload == message.SerializeToString()  # type: ignore[attr-defined]


async def test_enqueueing_by_name_still_works_and_takes_a_task_version(client: Client) -> None:
    enqueued = await client.enqueue("q", "send_email", b"raw", task_version="1.0.0")
    job = await client.get_job(enqueued.job_id)

    assert (job.task_type, job.task_version, job.payload) == ("send_email", "1.0.0", b"raw")


# -- typed handlers --------------------------------------------------------------------------


async def test_a_typed_handler_receives_the_decoded_message(
    live_coordinator: Coordinator,
    client: Client,
    email_pb2: ModuleType,
    start_worker: StartWorker,
) -> None:
    worker = _worker(live_coordinator.address)

    @worker.task(email_pb2.SendEmail)
    async def send(job: JobContext) -> str:
        return f"{job.message.to.email}:{job.message.subject}"

    start_worker(worker)
    enqueued = await client.enqueue("q", _email(email_pb2))  # type: ignore[arg-type]

    assert await client.wait_for_result(enqueued.job_id, timeout=5) == b"ada@example.com:hello"


async def test_a_payload_that_does_not_decode_fails_the_job_for_good(
    live_coordinator: Coordinator,
    client: Client,
    email_pb2: ModuleType,
    start_worker: StartWorker,
) -> None:
    worker = _worker(live_coordinator.address)

    @worker.task(email_pb2.SendEmail)
    async def send(job: JobContext) -> None:
        raise AssertionError("never called")

    start_worker(worker)
    # Field 1 claims 5 bytes but 2 follow: truncated. (A wrong wire type would not do: the
    # parser keeps such a field as an unknown one.)
    enqueued = await client.enqueue("q", "send_email", b"\x0a\x05ab", max_attempts=5)
    job = await client.wait_job(enqueued.job_id, timeout=5)

    assert job.state == JobState.FAILED
    assert job.attempt == 1
    assert job.last_error is not None
    assert job.last_error.type == "PayloadDecodeError"
    assert "not a valid acme.email.v1.SendEmail" in job.last_error.message


async def test_jobs_go_to_the_handler_of_their_major_version(
    live_coordinator: Coordinator,
    client: Client,
    email_pb2: ModuleType,
    start_worker: StartWorker,
) -> None:
    worker = _worker(live_coordinator.address)

    @worker.task(email_pb2.SendEmail)
    async def v1(job: JobContext) -> str:
        return f"v1:{job.message.to.email}"

    @worker.task(email_pb2.SendEmailV2)
    async def v2(job: JobContext) -> str:
        return f"v2:{job.message.recipients[0].email}"

    start_worker(worker)
    first = await client.enqueue("q", _email(email_pb2))  # type: ignore[arg-type]
    second = await client.enqueue(
        "q",
        email_pb2.SendEmailV2(recipients=[email_pb2.Address(email="bob@example.com")]),
    )

    assert await client.wait_for_result(first.job_id, timeout=5) == b"v1:ada@example.com"
    assert await client.wait_for_result(second.job_id, timeout=5) == b"v2:bob@example.com"


def test_a_second_handler_for_the_same_major_version_is_refused(email_pb2: ModuleType) -> None:
    worker = _worker("127.0.0.1:1")
    worker.register(email_pb2.SendEmail, lambda job: None)

    with pytest.raises(ValueError, match="major version 1"):
        worker.register(email_pb2.SendEmail, lambda job: None)


def test_a_typed_handler_is_refused_next_to_a_plain_one_of_the_same_name(
    email_pb2: ModuleType,
) -> None:
    worker = _worker("127.0.0.1:1")
    worker.register("send_email", lambda job: None)

    with pytest.raises(ValueError, match="already has a handler"):
        worker.register(email_pb2.SendEmailV2, lambda job: None)


async def test_a_v2_job_is_never_given_to_a_v1_only_worker(
    live_coordinator: Coordinator,
    client: Client,
    email_pb2: ModuleType,
    start_worker: StartWorker,
) -> None:
    v1_worker = _worker(live_coordinator.address, worker_id="v1-only")
    v1_worker.register(email_pb2.SendEmail, lambda job: "v1")
    start_worker(v1_worker)
    enqueued = await client.enqueue(
        "q", email_pb2.SendEmailV2(recipients=[email_pb2.Address(email="bob@example.com")])
    )
    await asyncio.sleep(1.5)  # more than a lease long-poll of the v1 worker
    waiting = await client.get_job(enqueued.job_id)

    v2_worker = _worker(live_coordinator.address, worker_id="v2")
    v2_worker.register(email_pb2.SendEmailV2, lambda job: "v2")
    start_worker(v2_worker)

    assert (waiting.state, waiting.attempt) == (JobState.AVAILABLE, 0)
    assert await client.wait_for_result(enqueued.job_id, timeout=5) == b"v2"
    assert (await client.get_job(enqueued.job_id)).leased_by == "v2"


# -- what the worker declares in Lease (a recording stand-in for the coordinator) ---------------


class _RecordingCoordinator(rpc.CoordinatorServiceServicer):
    """Answers Lease with no jobs and keeps every request."""

    def __init__(self) -> None:
        self.leases: list[pb.LeaseRequest] = []
        self.leased = asyncio.Event()

    async def Lease(
        self, request: pb.LeaseRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.LeaseResponse:
        self.leases.append(request)
        self.leased.set()
        await asyncio.sleep(0.05)
        return pb.LeaseResponse()


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[_RecordingCoordinator, str]]:
    # The typed servicer base declares every RPC abstract; only Lease is called here.
    servicer = _RecordingCoordinator()  # type: ignore[abstract]
    server = grpc.aio.server()
    rpc.add_CoordinatorServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def _first_lease(
    recorder: tuple[_RecordingCoordinator, str], worker: Worker, start_worker: StartWorker
) -> pb.LeaseRequest:
    start_worker(worker)
    await asyncio.wait_for(recorder[0].leased.wait(), 5)
    return recorder[0].leases[0]


async def test_the_worker_declares_each_handler_in_lease(
    recorder: tuple[_RecordingCoordinator, str], email_pb2: ModuleType, start_worker: StartWorker
) -> None:
    worker = _worker(recorder[1])
    worker.register(email_pb2.SendEmail, lambda job: None)
    worker.register(email_pb2.SendEmailV2, lambda job: None)
    worker.register("resize", lambda job: None)

    lease = await _first_lease(recorder, worker, start_worker)

    assert sorted((t.name, t.version) for t in lease.task_types) == [
        ("resize", ""),
        ("send_email", "1.2.0"),
        ("send_email", "2.0.0"),
    ]


async def test_declaring_task_types_can_be_turned_off(
    recorder: tuple[_RecordingCoordinator, str], email_pb2: ModuleType, start_worker: StartWorker
) -> None:
    worker = _worker(recorder[1], declare_task_types=False)
    worker.register(email_pb2.SendEmail, lambda job: None)

    lease = await _first_lease(recorder, worker, start_worker)

    assert list(lease.task_types) == []


# -- conveyor.testing ------------------------------------------------------------------------


def test_run_handler_takes_a_message_and_hands_it_over_decoded(email_pb2: ModuleType) -> None:
    seen: list[tuple[str, str, str]] = []

    def handler(job: JobContext) -> None:
        seen.append((job.task_type, job.task_version, job.message.to.email))

    outcome = run_handler(handler, _email(email_pb2))  # type: ignore[arg-type]

    assert outcome.succeeded
    assert seen == [("send_email", "1.2.0", "ada@example.com")]
