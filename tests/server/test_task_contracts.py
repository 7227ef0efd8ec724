"""Versioned task contracts on the wire: registration, payload checks at enqueue, strict
queues, routing by version in Lease, and the queue stat of jobs no worker can take."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor.v1 import task_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from server_wire import refused

QUEUE = "mail"
FIELD = descriptor_pb2.FieldDescriptorProto


def contract_file(version: str, *extra_fields: str) -> descriptor_pb2.FileDescriptorProto:
    """acme/email/v<major>/email.proto with message SendEmail {to = 1; subject = 2; ...}
    declaring (conveyor.v1.task) = {name: "send_email", version}."""
    major = version.split(".")[0]
    file = descriptor_pb2.FileDescriptorProto(
        name=f"acme/email/v{major}/email.proto",
        package=f"acme.email.v{major}",
        syntax="proto3",
        dependency=["conveyor/v1/task.proto"],
    )
    message = file.message_type.add(name="SendEmail")
    for number, field_name in enumerate(("to", "subject", *extra_fields), start=1):
        message.field.add(
            name=field_name, number=number, type=FIELD.TYPE_STRING, label=FIELD.LABEL_OPTIONAL
        )
    message.options.Extensions[task_pb2.task].name = "send_email"
    message.options.Extensions[task_pb2.task].version = version
    return file


def imports() -> list[descriptor_pb2.FileDescriptorProto]:
    files = []
    for source in (descriptor_pb2.DESCRIPTOR, task_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        source.CopyToProto(proto)
        files.append(proto)
    return files


def descriptor_set(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet(file=[*imports(), file])


def message_of(file: descriptor_pb2.FileDescriptorProto, **fields: str) -> Message:
    pool = descriptor_pool.DescriptorPool()
    for proto in (*imports(), file):
        pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.SendEmail"))
    return cls(**fields)


V1_2 = contract_file("1.2.0")
V2 = contract_file("2.0.0", "cc")


async def register(
    stub: rpc.CoordinatorServiceStub,
    file: descriptor_pb2.FileDescriptorProto,
    version: str,
    name: str = "send_email",
) -> pb.TaskType:
    request = pb.RegisterTaskTypeRequest(
        name=name,
        version=version,
        message_type=f"{file.package}.SendEmail",
        descriptors=descriptor_set(file),
    )
    reply: pb.TaskType = await stub.RegisterTaskType(request)
    return reply


def spec(payload: bytes, version: str = "", task_type: str = "send_email") -> pb.JobSpec:
    return pb.JobSpec(queue=QUEUE, task_type=task_type, payload=payload, task_version=version)


async def lease_for(
    stub: rpc.CoordinatorServiceStub, refs: Sequence[tuple[str, str]], max_jobs: int = 10
) -> list[pb.LeasedJob]:
    reply = await stub.Lease(
        pb.LeaseRequest(
            worker_id="w",
            queues=[QUEUE],
            max_jobs=max_jobs,
            task_types=[pb.TaskTypeRef(name=n, version=v) for n, v in refs],
        )
    )
    return list(reply.jobs)


# -- registration ------------------------------------------------------------------------------


async def test_registered_version_is_returned_with_its_descriptors(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    stored = await register(stub, V1_2, "1.2.0")
    got = await stub.GetTaskType(pb.GetTaskTypeRequest(name="send_email", version="1.2.0"))
    assert (got.name, got.version, got.message_type) == (
        "send_email",
        "1.2.0",
        "acme.email.v1.SendEmail",
    )
    assert {f.name for f in got.descriptors.file} == {f.name for f in descriptor_set(V1_2).file}
    assert got.registered_at == stored.registered_at


async def test_get_without_version_returns_the_highest(stub: rpc.CoordinatorServiceStub) -> None:
    await register(stub, V1_2, "1.2.0")
    await register(stub, V2, "2.0.0")
    await register(stub, contract_file("1.10.0"), "1.10.0")
    got = await stub.GetTaskType(pb.GetTaskTypeRequest(name="send_email"))
    assert got.version == "2.0.0"


async def test_list_pages_through_versions_in_order(stub: rpc.CoordinatorServiceStub) -> None:
    for version in ("1.10.0", "1.2.0", "2.0.0"):
        file = V2 if version == "2.0.0" else contract_file(version)
        await register(stub, file, version)
    first = await stub.ListTaskTypes(pb.ListTaskTypesRequest(page_size=2))
    second = await stub.ListTaskTypes(
        pb.ListTaskTypesRequest(page_size=2, page_token=first.next_page_token)
    )
    versions = [t.version for t in (*first.task_types, *second.task_types)]
    assert versions == ["1.2.0", "1.10.0", "2.0.0"]
    assert second.next_page_token == ""


async def test_registering_the_same_version_again_is_harmless(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    first = await register(stub, V1_2, "1.2.0")
    again = await register(stub, V1_2, "1.2.0")
    assert again.registered_at == first.registered_at


async def test_a_published_version_cannot_change(stub: rpc.CoordinatorServiceStub) -> None:
    await register(stub, V1_2, "1.2.0")
    changed = contract_file("1.2.0", "reply_to")
    message = await refused(register(stub, changed, "1.2.0"), grpc.StatusCode.ALREADY_EXISTS)
    assert "register a new version" in message


async def test_option_that_disagrees_with_the_request_is_refused(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    message = await refused(register(stub, V1_2, "1.3.0"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "1.2.0" in message and "1.3.0" in message


async def test_descriptors_missing_an_import_are_refused_naming_it(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    request = pb.RegisterTaskTypeRequest(
        name="send_email",
        version="1.2.0",
        message_type="acme.email.v1.SendEmail",
        descriptors=descriptor_pb2.FileDescriptorSet(file=[V1_2]),
    )
    message = await refused(stub.RegisterTaskType(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "conveyor/v1/task.proto" in message


async def test_unknown_message_type_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    request = pb.RegisterTaskTypeRequest(
        name="send_email",
        version="1.2.0",
        message_type="acme.email.v1.Nope",
        descriptors=descriptor_set(V1_2),
    )
    message = await refused(stub.RegisterTaskType(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "message_type" in message


@pytest.mark.parametrize("version", ["1.2", "v1.2.0", "1.2.0-beta", "01.2.0", ""])
async def test_malformed_version_is_refused(stub: rpc.CoordinatorServiceStub, version: str) -> None:
    message = await refused(register(stub, V1_2, version), grpc.StatusCode.INVALID_ARGUMENT)
    assert "semantic version" in message


async def test_unknown_task_type_is_not_found(stub: rpc.CoordinatorServiceStub) -> None:
    await refused(
        stub.GetTaskType(pb.GetTaskTypeRequest(name="nope", version="1.0.0")),
        grpc.StatusCode.NOT_FOUND,
    )


# -- payload checks --------------------------------------------------------------------------


async def test_payload_of_the_registered_message_is_accepted(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await register(stub, V1_2, "1.2.0")
    payload = message_of(V1_2, to="ada@example.com").SerializeToString()
    reply = await stub.Enqueue(pb.EnqueueRequest(job=spec(payload, "1.2.0")))
    job = await stub.GetJob(pb.GetJobRequest(job_id=reply.job_id))
    assert job.task_version == "1.2.0"


async def test_payload_that_does_not_parse_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    await register(stub, V1_2, "1.2.0")
    message = await refused(
        stub.Enqueue(pb.EnqueueRequest(job=spec(b"\x0a\x05ab", "1.2.0"))),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "job.payload is not a send_email 1.2.0" in message


async def test_payload_with_a_field_the_version_lacks_is_refused_naming_it(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await register(stub, V1_2, "1.2.0")
    newer = message_of(V2, to="a", cc="b").SerializeToString()  # field 3 is not in 1.2.0
    message = await refused(
        stub.Enqueue(pb.EnqueueRequest(job=spec(newer, "1.2.0"))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "field number 3" in message


async def test_batch_with_one_bad_payload_stores_nothing(stub: rpc.CoordinatorServiceStub) -> None:
    await register(stub, V1_2, "1.2.0")
    good = message_of(V1_2, to="a").SerializeToString()
    request = pb.EnqueueBatchRequest(jobs=[spec(good, "1.2.0"), spec(b"\xff", "1.2.0")])
    message = await refused(stub.EnqueueBatch(request), grpc.StatusCode.INVALID_ARGUMENT)
    listed = await stub.ListJobs(pb.ListJobsRequest(queue=QUEUE))
    assert "jobs[1].payload" in message
    assert list(listed.jobs) == []


async def test_unregistered_version_is_accepted_unchecked_in_a_lenient_queue(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    reply = await stub.Enqueue(pb.EnqueueRequest(job=spec(b"anything", "3.0.0")))
    assert reply.state == pb.JOB_STATE_AVAILABLE


async def test_malformed_task_version_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    message = await refused(
        stub.Enqueue(pb.EnqueueRequest(job=spec(b"", "latest"))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "job.task_version" in message


# -- strict queues ---------------------------------------------------------------------------


async def make_strict(stub: rpc.CoordinatorServiceStub) -> None:
    await stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name=QUEUE, strict_task_types=True),
            update_mask=FieldMask(paths=["strict_task_types"]),
        )
    )


async def test_strict_queue_refuses_a_job_without_task_version(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await make_strict(stub)
    message = await refused(
        stub.Enqueue(pb.EnqueueRequest(job=spec(b""))), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "strict" in message and "task_version" in message


async def test_strict_queue_refuses_an_unregistered_version(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await make_strict(stub)
    message = await refused(
        stub.Enqueue(pb.EnqueueRequest(job=spec(b"", "1.2.0"))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "RegisterTaskType" in message


async def test_strict_queue_accepts_a_registered_version(stub: rpc.CoordinatorServiceStub) -> None:
    await make_strict(stub)
    await register(stub, V1_2, "1.2.0")
    payload = message_of(V1_2, to="a").SerializeToString()
    reply = await stub.Enqueue(pb.EnqueueRequest(job=spec(payload, "1.2.0")))
    queue = await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))
    assert reply.state == pb.JOB_STATE_AVAILABLE
    assert queue.strict_task_types


# -- routing ---------------------------------------------------------------------------------


async def enqueue_versions(stub: rpc.CoordinatorServiceStub, *versions: str) -> dict[str, str]:
    """Job id by version, of send_email jobs (unregistered: the payload is not checked)."""
    ids = {}
    for version in versions:
        reply = await stub.Enqueue(pb.EnqueueRequest(job=spec(b"", version)))
        ids[version] = reply.job_id
    return ids


async def test_a_version_2_job_is_never_given_to_a_version_1_worker(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    ids = await enqueue_versions(stub, "2.0.0")
    assert await lease_for(stub, [("send_email", "1.9.9")]) == []
    [leased] = await lease_for(stub, [("send_email", "2.0.0")])
    assert leased.job_id == ids["2.0.0"] and leased.task_version == "2.0.0"


async def test_a_worker_takes_jobs_up_to_its_minor_and_patch(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    ids = await enqueue_versions(stub, "1.0.0", "1.1.5", "1.1.6", "1.2.0")
    leased = await lease_for(stub, [("send_email", "1.1.5")])
    assert {j.job_id for j in leased} == {ids["1.0.0"], ids["1.1.5"]}


async def test_a_job_without_version_goes_to_any_worker_of_its_type(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    ids = await enqueue_versions(stub, "")
    [leased] = await lease_for(stub, [("send_email", "4.0.0")])
    assert leased.job_id == ids[""]


async def test_a_worker_takes_only_the_task_types_it_declares(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await stub.Enqueue(pb.EnqueueRequest(job=spec(b"", task_type="resize_image")))
    assert await lease_for(stub, [("send_email", "")]) == []
    assert len(await lease_for(stub, [("resize_image", "")])) == 1


async def test_a_type_declared_without_version_takes_every_version(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    await enqueue_versions(stub, "1.0.0", "2.0.0", "")
    assert len(await lease_for(stub, [("send_email", "")])) == 3


async def test_a_worker_declaring_nothing_takes_any_job(stub: rpc.CoordinatorServiceStub) -> None:
    await enqueue_versions(stub, "1.0.0", "2.0.0")
    await stub.Enqueue(pb.EnqueueRequest(job=spec(b"", task_type="resize_image")))
    assert len(await lease_for(stub, [])) == 3


async def test_malformed_declared_version_is_refused(stub: rpc.CoordinatorServiceStub) -> None:
    message = await refused(
        lease_for(stub, [("send_email", "2")]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "task_types[0].version" in message


async def test_stats_count_jobs_no_seen_worker_can_take(stub: rpc.CoordinatorServiceStub) -> None:
    await enqueue_versions(stub, "1.0.0", "2.0.0", "2.1.0")
    await lease_for(stub, [("send_email", "2.0.0")], max_jobs=1)  # takes 2.0.0, declares 2.0.0
    queue = await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))
    # 1.0.0 (major 1) and 2.1.0 (newer minor) wait for a compatible worker.
    assert queue.stats.available == 2
    assert queue.stats.awaiting_compatible_worker == 2


async def test_a_worker_of_several_types_gets_them_in_dispatch_order(
    stub: rpc.CoordinatorServiceStub,
) -> None:
    for task_type, priority in (("a", 0), ("b", 5), ("a", 9), ("c", 7)):
        job = pb.JobSpec(queue=QUEUE, task_type=task_type, priority=priority)
        await stub.Enqueue(pb.EnqueueRequest(job=job))
    leased = await lease_for(stub, [("a", ""), ("b", "1.0.0")])
    assert [(j.task_type, j.job_id != "") for j in leased] == [
        ("a", True),
        ("b", True),
        ("a", True),
    ]
    jobs = [await stub.GetJob(pb.GetJobRequest(job_id=j.job_id)) for j in leased]
    assert [j.priority for j in jobs] == [9, 5, 0]
