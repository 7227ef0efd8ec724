"""Every request message of conveyor.v1.CoordinatorService, fuzzed from its descriptor and sent
to a real coordinator over gRPC: no call may end INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED, no
error message may quote a long value, and the coordinator answers normally afterwards.

Values are drawn from the field types (extreme integers and floats, NaN, Durations and
Timestamps at and past their ranges, long strings, large bytes, unknown enum numbers, batches
past their limits) mixed with values the coordinator knows (a queue, a leased job and its
token, a schedule, a task type), so calls also get past validation into the core and store.
Hypothesis runs derandomized against a fresh database: the same inputs every run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from google.protobuf import descriptor_pb2, duration_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVICE = pb.DESCRIPTOR.services_by_name["CoordinatorService"]
# About a minute in all on a 2-core machine (25 RPCs x 300 calls, then 400 sequences).
EXAMPLES_PER_RPC = 300
SEQUENCES = 400
CALL_TIMEOUT = 20.0  # seconds; a call that hangs this long is a failure, not a slow pass
MAX_DEPTH = 3  # nesting of generated messages (FileDescriptorSet would go on for ever)
REPEAT = 400  # one list in ~20 is its items repeated this often: batches past 1,000 items
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}
LONGEST_MESSAGE = 1024  # characters of a status message

QUEUE_AND_SCHEDULE_FIELDS = [
    "rate_limit",
    "per_key_rate_limit",
    "max_concurrency",
    "paused",
    "retry_policy",
    "lease_duration",
    "max_attempts",
    "retention",
    "strict_task_types",
    "cron",
    "timezone",
    "job",
    "misfire_policy",
    "catch_up_limit",
    "overlap_policy",
]
# Values the coordinator knows; the fixture adds the ids and token of jobs it creates.
KNOWN: list[str] = [
    "work",
    "task",
    "nightly",
    "1.0.0",
    "2.0.0",
    "UTC",
    "Europe",
    "Europe/Berlin",
    "* * * * *",
    "0 0 30 2 *",
    "*/5 * * * * *",
    "google.protobuf.Duration",
    "worker-1",
    "cron",
    "job",
    "rate_limit",
    "",
    "x" * 20_000,
    "q" * 129,
]

SEEDED: dict[str, str] = {}
# Values worth trying in fields of these names, on top of the general pool.
HINTS: dict[str, list[str]] = {
    "cron": ["* * * * *", "0 0 30 2 *", "0 0 29 2 *", "0 0 0 31 4 *", "*/1 * * * * *", "@daily"],
    "timezone": ["UTC", "Europe", "Europe/Berlin", "zone.tab", "../UTC", "right/UTC", " "],
    "version": ["1.0.0", "2.0.0", "1.0", "01.0.0", "999999999.0.0", "1.0.0-rc1"],
    "task_version": ["1.0.0", "1.1.0", "2.0.0", "1.0"],
    "message_type": ["google.protobuf.Duration", "google.protobuf.Timestamp", "a..b"],
    "paths": [*QUEUE_AND_SCHEDULE_FIELDS, "stats", "name"],
    "queue": ["work", "other", "health"],
    "queues": ["work", "other"],
    "name": ["work", "task", "nightly", "other"],
}

_INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_SMALL_INTS = [0, 1, -1, 2, 10, 30, 100, 500, 501, 1000, 1001, 10_000, 10_001, 1_000_001]
_DURATION_SECONDS = [
    0,
    1,
    30,
    31,
    300,
    86_400,
    86_401,
    3_155_760_000,
    3_155_760_001,
    315_576_000_000,
    315_576_000_001,
    9_200_000_000_000,
    -1,
    2**63 - 1,
    -(2**63),
]
_TIMESTAMP_SECONDS = [
    0,
    1_800_000_000,
    -62_135_596_800,
    -62_135_596_801,
    253_402_300_799,
    253_402_300_800,
    2**63 - 1,
    -(2**63),
]
_NANOS = [0, 1, -1, 500_000_000, 999_999_999, -999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]


def _int(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[field.type]
    edges = [v for v in _SMALL_INTS if low <= v <= high] + [low, high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _float(field: FieldDescriptor) -> st.SearchStrategy[float]:
    width = 32 if field.type == FieldDescriptor.TYPE_FLOAT else 64
    edges = [0.0, 1.0, 0.5, 1e-6, 1e6, 1e7, 5e-324, 1e-14, 1e308, -1.0]
    if width == 32:
        edges = [e for e in edges if e == 0 or 1e-38 < abs(e) < 1e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width))


def _string() -> st.SearchStrategy[str]:
    # Known values three times in four: a call must pass most checks to reach the store.
    known = st.integers(0, 10_000).map(lambda i: KNOWN[i % len(KNOWN)])
    return st.one_of(known, known, known, st.text(max_size=20), st.text(max_size=300))


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64), st.sampled_from([b"", b"x" * (256 * 1024 + 1), b"\xff" * 1024])
    )


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    numbers = [v.number for v in field.enum_type.values]
    if field.enum_type.is_closed:  # proto2 (descriptor.proto): unknown numbers cannot be set
        return st.sampled_from(numbers)
    return st.sampled_from([*numbers, -1, 99, 2**31 - 1])


def _duration() -> st.SearchStrategy[Duration]:
    seconds = st.one_of(
        st.sampled_from(_DURATION_SECONDS),
        st.integers(0, 100_000),
        st.integers(-(2**63), 2**63 - 1),
    )
    nanos = st.one_of(st.just(0), st.sampled_from(_NANOS), st.integers(-(2**31), 2**31 - 1))
    return st.builds(Duration, seconds=seconds, nanos=nanos)


def _timestamp() -> st.SearchStrategy[Message]:
    from google.protobuf.timestamp_pb2 import Timestamp

    seconds = st.one_of(st.sampled_from(_TIMESTAMP_SECONDS), st.integers(-(2**63), 2**63 - 1))
    nanos = st.one_of(st.sampled_from(_NANOS), st.integers(-(2**31), 2**31 - 1))
    return st.builds(Timestamp, seconds=seconds, nanos=nanos)


def _descriptor_set() -> st.SearchStrategy[Message]:
    """Mostly a real set (the one holding google.protobuf.Duration), sometimes a fuzzed one."""
    real = descriptor_pb2.FileDescriptorSet()
    duration_pb2.DESCRIPTOR.CopyToProto(real.file.add())
    generated = messages(descriptor_pb2.FileDescriptorSet.DESCRIPTOR, MAX_DEPTH - 1)
    return st.one_of(st.just(real), generated)


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Duration":
            return _duration()
        if name == "google.protobuf.Timestamp":
            return _timestamp()
        if name == "google.protobuf.FileDescriptorSet":
            return _descriptor_set()
        return messages(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_STRING:
        hints = HINTS.get(field.name)
        return st.one_of(st.sampled_from(hints), _string()) if hints else _string()
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _float(field)
    return _int(field)


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of `descriptor` with a random subset of its fields set, recursively."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE and (
            depth >= MAX_DEPTH or field.message_type.GetOptions().map_entry
        ):
            continue
        if not draw(st.booleans()):
            continue
        target = getattr(message, field.name)
        if field.is_repeated:
            items = draw(st.lists(_value(field, depth), max_size=3))
            small = all(_size(item) < 1024 for item in items)
            if items and small and draw(st.integers(0, 19)) == 0:
                items = items * REPEAT
            _fill_repeated(field, target, items)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(draw(_value(field, depth)))
        else:
            setattr(message, field.name, draw(_value(field, depth)))
    return message


@st.composite
def mutants(draw: st.DrawFn, template: Message) -> Message:
    """A valid request with one field (sometimes two or three, anywhere in it) replaced by a
    fuzzed value: the rest passes validation, so the fuzzed value reaches the check, core or
    store that depends on it."""
    message = type(template)()
    message.CopyFrom(template)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        _mutate(draw, message, 0)
    return message


def _mutate(draw: st.DrawFn, message: Message, depth: int) -> None:
    if not message.DESCRIPTOR.fields:
        return  # an empty request (GetServerInfo) has nothing to replace
    field = draw(st.sampled_from(list(message.DESCRIPTOR.fields)))
    target = getattr(message, field.name)
    descend = (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type.full_name not in _SPECIAL
        and depth < MAX_DEPTH
        and (not field.is_repeated or len(target) > 0)
        and draw(st.booleans())
    )
    if descend:
        _mutate(draw, target[0] if field.is_repeated else target, depth + 1)
        return
    message.ClearField(field.name)
    if field.is_repeated:
        items = draw(st.lists(_value(field, depth), max_size=3))
        _fill_repeated(field, target, items)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(draw(_value(field, depth)))
    else:
        setattr(message, field.name, draw(_value(field, depth)))


_SPECIAL = {"google.protobuf.Duration", "google.protobuf.Timestamp"}


def _fill_repeated(field: FieldDescriptor, target: Any, items: list[Any]) -> None:
    """Appends drawn items to a repeated field; a map field (repeated map entries on the
    wire, a mapping in Python) takes each entry's key and value."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        target.extend(items)
    elif field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for entry in items:
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[entry.key].CopyFrom(entry.value)
            else:
                target[entry.key] = entry.value
    else:
        for item in items:
            target.add().CopyFrom(item)


def _size(item: Any) -> int:
    if isinstance(item, Message):
        return item.ByteSize()
    return len(item) if isinstance(item, str | bytes) else 8


def _without_long_waits(request: Message) -> Message:
    """A valid Lease wait or WaitJob timeout becomes 10 ms, so long-polls cannot eat the
    budget; invalid ones (negative, out of range) stay as drawn."""
    for field in ("wait", "timeout"):
        if field not in request.DESCRIPTOR.fields_by_name:
            continue
        value: Duration = getattr(request, field)
        valid = 0 <= value.seconds <= 300 and 0 <= value.nanos < 1_000_000_000
        if valid or not request.HasField(field):  # WaitJob's default is 30 s
            getattr(request, field).CopyFrom(Duration(nanos=10_000_000))
    return request


class _Server:
    """A coordinator on its own event loop in a thread, so Hypothesis can drive it from plain
    synchronous tests."""

    def __init__(self, config: ServerConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.coordinator: Coordinator = self._run(Coordinator.start(config, clock=FakeClock()))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def stop(self) -> None:
        self._run(self.coordinator.stop(grace=1.0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "conveyor.db"
    config = ServerConfig(
        db_url=f"sqlite:///{path}",
        listen="127.0.0.1:0",
        log_level="error",
        sqlite_synchronous="NORMAL",
    )
    server = _Server(config)
    limit = 64 * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit)]
    try:
        with grpc.insecure_channel(server.coordinator.address, options=options) as ch:
            _seed(rpc.CoordinatorServiceStub(ch))
            yield ch
    finally:
        server.stop()


def _seed(stub: rpc.CoordinatorServiceStub) -> None:
    """A queue with an available and a leased job, a schedule and a task type to aim at."""
    job = pb.JobSpec(queue="work", task_type="task")
    available = stub.Enqueue(pb.EnqueueRequest(job=job)).job_id
    leased_id = stub.Enqueue(pb.EnqueueRequest(job=job)).job_id
    [leased] = stub.Lease(pb.LeaseRequest(worker_id="worker-1", queues=["work"])).jobs
    schedule = pb.Schedule(name="nightly", cron="0 3 * * *", job=job)
    stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule))
    descriptors = descriptor_pb2.FileDescriptorSet()
    duration_pb2.DESCRIPTOR.CopyToProto(descriptors.file.add())
    stub.RegisterTaskType(
        pb.RegisterTaskTypeRequest(
            name="task",
            version="1.0.0",
            message_type="google.protobuf.Duration",
            descriptors=descriptors,
        )
    )
    KNOWN.extend([available, leased_id, leased.job_id, leased.lease_token])
    SEEDED.update(available=available, leased=leased.job_id, token=leased.lease_token)


def _templates() -> dict[str, Message]:
    """A valid request of every RPC, aimed at what _seed created."""
    job = pb.JobSpec(queue="work", task_type="task", payload=b"p", max_attempts=3)
    leased, token, available = SEEDED["leased"], SEEDED["token"], SEEDED["available"]
    heartbeat = pb.HeartbeatRequest(
        job_id=leased, lease_token=token, extend_by=Duration(seconds=30)
    )
    receipt = pb.ReceiptRequest(
        job_id=leased,
        lease_token=token,
        outcome=pb.OUTCOME_FAILURE,
        error=pb.JobError(message="m"),
        retry_after=Duration(seconds=1),
    )
    schedule = pb.Schedule(name="nightly", cron="* * * * *", timezone="UTC", job=job)
    queue = pb.Queue(name="work", rate_limit=pb.RateLimit(rate=1, burst=1))
    descriptors = descriptor_pb2.FileDescriptorSet()
    duration_pb2.DESCRIPTOR.CopyToProto(descriptors.file.add())
    return {
        "Enqueue": pb.EnqueueRequest(job=job),
        "EnqueueBatch": pb.EnqueueBatchRequest(jobs=[job, job]),
        "Lease": pb.LeaseRequest(worker_id="worker-1", queues=["work"], max_jobs=2),
        "Heartbeat": heartbeat,
        "HeartbeatBatch": pb.HeartbeatBatchRequest(heartbeats=[heartbeat]),
        "Receipt": receipt,
        "ReceiptBatch": pb.ReceiptBatchRequest(receipts=[receipt]),
        "GetJob": pb.GetJobRequest(job_id=available),
        "ListJobs": pb.ListJobsRequest(queue="work", page_size=10, view=pb.JOB_VIEW_FULL),
        "CancelJob": pb.CancelJobRequest(job_id=available),
        "RetryJob": pb.RetryJobRequest(job_id=available),
        "WaitJob": pb.WaitJobRequest(job_id=available),
        "CreateSchedule": pb.CreateScheduleRequest(schedule=schedule),
        "GetSchedule": pb.GetScheduleRequest(name="nightly"),
        "ListSchedules": pb.ListSchedulesRequest(page_size=10),
        "UpdateSchedule": pb.UpdateScheduleRequest(
            schedule=schedule, update_mask=FieldMask(paths=["cron", "job"])
        ),
        "DeleteSchedule": pb.DeleteScheduleRequest(name="other"),
        "PauseSchedule": pb.PauseScheduleRequest(name="nightly"),
        "ResumeSchedule": pb.ResumeScheduleRequest(name="nightly"),
        "GetQueue": pb.GetQueueRequest(name="work"),
        "ListQueues": pb.ListQueuesRequest(page_size=10),
        "UpdateQueue": pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=[])),
        "RegisterTaskType": pb.RegisterTaskTypeRequest(
            name="task",
            version="1.1.0",
            message_type="google.protobuf.Duration",
            descriptors=descriptors,
        ),
        "GetTaskType": pb.GetTaskTypeRequest(name="task", version="1.0.0"),
        "ListTaskTypes": pb.ListTaskTypesRequest(page_size=10),
        "GetServerInfo": pb.GetServerInfoRequest(),
    }


def requests(method: str) -> st.SearchStrategy[Message]:
    """Mutants of a valid request two times in three, otherwise a request drawn from scratch."""
    template = _templates()[method]
    input_type = SERVICE.methods_by_name[method].input_type
    return st.one_of(mutants(template), mutants(template), messages(input_type))


def _assert_healthy(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = rpc.CoordinatorServiceStub(channel)
    job = pb.JobSpec(queue="health", task_type="task")
    job_id = stub.Enqueue(pb.EnqueueRequest(job=job), timeout=CALL_TIMEOUT).job_id
    assert stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=CALL_TIMEOUT).job_id == job_id


def _send(channel: grpc.Channel, method: str, request: Message) -> None:
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")  # bytes in, bytes out
    # Partial: descriptor.proto has required fields the fuzzer may leave out.
    data = _without_long_waits(request).SerializePartialToString()
    try:
        call(data, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
        assert code not in FORBIDDEN, f"{method}: {code.name} {details[:500]}"
        assert len(details) <= LONGEST_MESSAGE, f"{method}: {len(details)}-char message"


FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_fuzzed_requests_never_end_internal_or_unknown(channel: grpc.Channel, method: str) -> None:
    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_RPC)
    @given(request=requests(method))
    def fuzz(request: Message) -> None:
        _send(channel, method, request)

    fuzz()
    _assert_healthy(channel)


def _call() -> st.SearchStrategy[tuple[str, Message]]:
    def request(method: str) -> st.SearchStrategy[tuple[str, Message]]:
        return requests(method).map(lambda message: (method, message))

    return st.sampled_from([m.name for m in SERVICE.methods]).flatmap(request)


def test_fuzzed_sequences_of_calls_never_end_internal_or_unknown(channel: grpc.Channel) -> None:
    """Mixed calls on one database: a value one call stores (a queue's rate, a schedule) must
    not break a later call of another RPC."""

    @settings(FUZZ_SETTINGS, max_examples=SEQUENCES)
    @given(calls=st.lists(_call(), min_size=1, max_size=6))
    def fuzz(calls: list[tuple[str, Message]]) -> None:
        for method, request in calls:
            _send(channel, method, request)

    fuzz()
    _assert_healthy(channel)
