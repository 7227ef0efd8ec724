"""Namespaces (issue 10, item 2) over a real coordinator with --auth, on SQLite and
PostgreSQL: a job of another namespace is NOT_FOUND in exactly the words of a missing job; the
same queue name in two namespaces names two queues; names never come back qualified; and
without --auth nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from auth_support import MakeToken, bearer
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor.v1 import task_pb2
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from databases import DB_KINDS
from google.protobuf import descriptor_pb2, duration_pb2

pytestmark = pytest.mark.parametrize("db_kind", DB_KINDS)

SHORT_WAIT = duration_pb2.Duration(nanos=1_000_000)


class Caller:
    """One token's view of the coordinator."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = rpc.CoordinatorServiceStub(channel)
        self.metadata = bearer(token)

    async def enqueue(self, queue: str, task_type: str = "send") -> pb.EnqueueResponse:
        job = pb.JobSpec(queue=queue, task_type=task_type, payload=b"p")
        reply: pb.EnqueueResponse = await self.stub.Enqueue(
            pb.EnqueueRequest(job=job), metadata=self.metadata, timeout=10
        )
        return reply

    async def refusal(self, method: str, request: object) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(self.stub, method)(request, metadata=self.metadata, timeout=10)
        return refused.value.code(), refused.value.details() or ""


@pytest.fixture
async def channel_(auth_coordinator: Coordinator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(auth_coordinator.address) as channel:
        yield channel


def by_job_id(job_id: str) -> list[tuple[str, object]]:
    lease_token = "f" * 32
    return [
        ("GetJob", pb.GetJobRequest(job_id=job_id)),
        ("WaitJob", pb.WaitJobRequest(job_id=job_id, timeout=SHORT_WAIT)),
        ("CancelJob", pb.CancelJobRequest(job_id=job_id)),
        ("RetryJob", pb.RetryJobRequest(job_id=job_id)),
        ("Heartbeat", pb.HeartbeatRequest(job_id=job_id, lease_token=lease_token)),
        (
            "Receipt",
            pb.ReceiptRequest(job_id=job_id, lease_token=lease_token, outcome=pb.OUTCOME_SUCCESS),
        ),
    ]


async def test_a_foreign_job_is_not_found_in_the_words_of_a_missing_job(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    beta = Caller(channel_, make_token("beta-admin", "admin", namespace="beta"))
    job_id = (await alpha.enqueue("mail")).job_id
    missing = "0" * len(job_id)
    for (method, foreign), (_, absent) in zip(by_job_id(job_id), by_job_id(missing), strict=True):
        code, details = await beta.refusal(method, foreign)
        missing_code, missing_details = await beta.refusal(method, absent)
        assert (code, missing_code) == (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND)
        assert details == missing_details.replace(missing, job_id), method
    # Nothing was done to it: its owner still finds it waiting.
    job = await alpha.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=alpha.metadata)
    assert (job.state, job.queue) == (pb.JOB_STATE_AVAILABLE, "mail")


async def test_a_job_outside_the_tokens_queue_globs_is_not_found(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    owner = Caller(channel_, make_token("ops", "admin", namespace="alpha"))
    limited = Caller(channel_, make_token("mailer", "admin", namespace="alpha", queues=["mail*"]))
    billing = (await owner.enqueue("billing")).job_id
    code, _ = await limited.refusal("GetJob", pb.GetJobRequest(job_id=billing))
    assert code == grpc.StatusCode.NOT_FOUND
    mail = (await owner.enqueue("mail")).job_id
    found = await limited.stub.GetJob(pb.GetJobRequest(job_id=mail), metadata=limited.metadata)
    assert found.queue == "mail"


async def test_the_same_queue_name_in_two_namespaces_is_two_queues(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    beta = Caller(channel_, make_token("beta-admin", "admin", namespace="beta"))
    ours = (await alpha.enqueue("mail")).job_id
    await beta.stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name="mail", paused=True), update_mask={"paths": ["paused"]}
        ),
        metadata=beta.metadata,
    )
    # beta's pause does not pause alpha's "mail", and beta's lease does not see alpha's job.
    lease = pb.LeaseRequest(worker_id="w", queues=["mail"], max_jobs=10)
    assert not (await beta.stub.Lease(lease, metadata=beta.metadata)).jobs
    await beta.stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name="mail", paused=False), update_mask={"paths": ["paused"]}
        ),
        metadata=beta.metadata,
    )
    assert not (await beta.stub.Lease(lease, metadata=beta.metadata)).jobs
    leased = (await alpha.stub.Lease(lease, metadata=alpha.metadata)).jobs
    assert [(j.job_id, j.queue, j.task_type) for j in leased] == [(ours, "mail", "send")]
    alpha_queue = await alpha.stub.GetQueue(
        pb.GetQueueRequest(name="mail"), metadata=alpha.metadata
    )
    beta_queue = await beta.stub.GetQueue(pb.GetQueueRequest(name="mail"), metadata=beta.metadata)
    assert (alpha_queue.name, alpha_queue.paused) == ("mail", False)
    assert (beta_queue.name, beta_queue.paused) == ("mail", False)
    assert alpha_queue.stats.leased == 1 and beta_queue.stats.leased == 0
    for caller in (alpha, beta):
        listed = await caller.stub.ListQueues(pb.ListQueuesRequest(), metadata=caller.metadata)
        assert [q.name for q in listed.queues] == ["mail"]


async def test_schedules_and_task_types_stay_in_their_namespace(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    beta = Caller(channel_, make_token("beta-admin", "admin", namespace="beta"))
    schedule = pb.Schedule(
        name="nightly", cron="0 3 * * *", job=pb.JobSpec(queue="mail", task_type="send")
    )
    created = await alpha.stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule), metadata=alpha.metadata
    )
    assert created.name == "nightly"
    code, details = await beta.refusal("GetSchedule", pb.GetScheduleRequest(name="nightly"))
    assert code == grpc.StatusCode.NOT_FOUND and "alpha" not in details
    listed = await beta.stub.ListSchedules(pb.ListSchedulesRequest(), metadata=beta.metadata)
    assert not listed.schedules
    # The same name is free in beta.
    await beta.stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule), metadata=beta.metadata
    )
    for caller in (alpha, beta):
        listed = await caller.stub.ListSchedules(
            pb.ListSchedulesRequest(), metadata=caller.metadata
        )
        assert [(s.name, s.job.queue) for s in listed.schedules] == [("nightly", "mail")]


async def test_list_jobs_shows_only_the_callers_namespace(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    default = Caller(channel_, make_token("root", "admin"))
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    ours = {(await alpha.enqueue("mail")).job_id for _ in range(3)}
    theirs = {(await default.enqueue("mail")).job_id for _ in range(2)}
    for caller, expected in ((alpha, ours), (default, theirs)):
        for request in (pb.ListJobsRequest(), pb.ListJobsRequest(queue="mail")):
            listed = await caller.stub.ListJobs(request, metadata=caller.metadata)
            assert {j.job_id for j in listed.jobs} == expected
            assert {j.queue for j in listed.jobs} == {"mail"}


async def test_a_name_too_long_for_the_namespace_is_invalid_and_says_why(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    request = pb.EnqueueRequest(job=pb.JobSpec(queue="q" * 128, task_type="send"))
    code, details = await alpha.refusal("Enqueue", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 122 characters" in details
    job_id = (await alpha.enqueue("q" * 122)).job_id
    found = await alpha.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=alpha.metadata)
    assert found.queue == "q" * 122


async def test_without_auth_every_caller_shares_the_default_namespace(
    coordinator: Coordinator,
) -> None:
    async with grpc.aio.insecure_channel(coordinator.address) as channel:
        stub = rpc.CoordinatorServiceStub(channel)
        job = pb.JobSpec(queue="mail", task_type="send", payload=b"p")
        enqueued = await stub.Enqueue(pb.EnqueueRequest(job=job))
        found = await stub.GetJob(pb.GetJobRequest(job_id=enqueued.job_id))
        assert (found.queue, found.task_type) == ("mail", "send")
        queues = await stub.ListQueues(pb.ListQueuesRequest())
        assert [q.name for q in queues.queues] == ["mail"]
    # Stored as it always was: the name itself, so older data is in "default" unchanged.
    stored = await coordinator.jobs.get(enqueued.job_id)
    assert stored.queue == "mail"


async def test_a_parent_in_another_namespace_is_refused_like_a_missing_one(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    beta = Caller(channel_, make_token("beta-admin", "admin", namespace="beta"))
    parent = (await alpha.enqueue("mail")).job_id
    missing = "0" * len(parent)
    answers = []
    for parent_id in (parent, missing):
        job = pb.JobSpec(queue="mail", task_type="send", parent_job_id=parent_id)
        answers.append(await beta.refusal("Enqueue", pb.EnqueueRequest(job=job)))
    (code, details), (missing_code, missing_details) = answers
    assert code == missing_code == grpc.StatusCode.NOT_FOUND
    assert details == missing_details.replace(missing, parent)
    child = pb.JobSpec(queue="mail", task_type="send", parent_job_id=parent)
    await alpha.stub.Enqueue(pb.EnqueueRequest(job=child), metadata=alpha.metadata)


async def test_cron_fires_into_the_schedules_own_namespace(
    auth_coordinator: Coordinator,
    channel_: grpc.aio.Channel,
    make_token: MakeToken,
    clock: FakeClock,
) -> None:
    default = Caller(channel_, make_token("root", "admin"))
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    schedule = pb.Schedule(
        name="nightly", cron="0 3 * * *", job=pb.JobSpec(queue="mail", task_type="send")
    )
    created = await alpha.stub.CreateSchedule(
        pb.CreateScheduleRequest(schedule=schedule), metadata=alpha.metadata
    )
    clock.set(created.next_fire_at.ToMicroseconds())
    await auth_coordinator.cron.run_once(clock.now())
    listed = await alpha.stub.ListJobs(pb.ListJobsRequest(), metadata=alpha.metadata)
    [job] = listed.jobs
    assert (job.queue, job.task_type) == ("mail", "send")
    after = await alpha.stub.GetSchedule(
        pb.GetScheduleRequest(name="nightly"), metadata=alpha.metadata
    )
    assert after.last_job_id == job.job_id
    theirs = await default.stub.ListJobs(pb.ListJobsRequest(), metadata=default.metadata)
    assert not theirs.jobs


def ping_contract() -> pb.RegisterTaskTypeRequest:
    """Task type "ping" 1.0.0: message acme.Ping {string to = 1;}, declaring its task option."""
    file = descriptor_pb2.FileDescriptorProto(
        name="acme/ping.proto",
        package="acme",
        syntax="proto3",
        dependency=["conveyor/v1/task.proto"],
    )
    message = file.message_type.add(name="Ping")
    message.field.add(
        name="to",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    message.options.Extensions[task_pb2.task].name = "ping"
    message.options.Extensions[task_pb2.task].version = "1.0.0"
    files = []
    for source in (descriptor_pb2.DESCRIPTOR, task_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        source.CopyToProto(proto)
        files.append(proto)
    return pb.RegisterTaskTypeRequest(
        name="ping",
        version="1.0.0",
        message_type="acme.Ping",
        descriptors=descriptor_pb2.FileDescriptorSet(file=[*files, file]),
    )


async def test_task_types_are_registered_and_checked_within_their_namespace(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    alpha = Caller(channel_, make_token("alpha-admin", "admin", namespace="alpha"))
    beta = Caller(channel_, make_token("beta-admin", "admin", namespace="beta"))
    registered = await alpha.stub.RegisterTaskType(ping_contract(), metadata=alpha.metadata)
    assert (registered.name, registered.version) == ("ping", "1.0.0")
    found = await alpha.stub.GetTaskType(
        pb.GetTaskTypeRequest(name="ping"), metadata=alpha.metadata
    )
    assert found.name == "ping"
    code, details = await beta.refusal("GetTaskType", pb.GetTaskTypeRequest(name="ping"))
    assert code == grpc.StatusCode.NOT_FOUND and "alpha" not in details and "/" not in details
    for caller, names in ((alpha, ["ping"]), (beta, [])):
        listed = await caller.stub.ListTaskTypes(
            pb.ListTaskTypesRequest(), metadata=caller.metadata
        )
        assert [t.name for t in listed.task_types] == names
    # A payload that is not a Ping: refused against alpha's contract; beta has none to check.
    job = pb.JobSpec(queue="mail", task_type="ping", task_version="1.0.0", payload=b"\xff\xff")
    code, _ = await alpha.refusal("Enqueue", pb.EnqueueRequest(job=job))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await beta.stub.Enqueue(pb.EnqueueRequest(job=job), metadata=beta.metadata)
