"""Versioned task contracts: semantic versions, which worker may take which job, and whether a
payload is the message its version promises. Plain Python and protobuf; no gRPC, no storage.

A contract is a protobuf message carrying `option (conveyor.v1.task) = {name, version}`. A
worker implementing version W of a task type may run a job of version J when both have the
same major version and W's minor.patch is at least J's: within a major version, newer
messages only add fields, so newer code reads older payloads."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from conveyor.v1 import task_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from conveyor_server.core.model import Micros, Version
from conveyor_server.errors import InvalidArgument, shown


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    version: Version
    message_type: str
    # A serialized FileDescriptorSet, files sorted by name, deterministic: two registrations
    # of the same contract compare equal byte for byte.
    descriptors: bytes
    registered_at: Micros = 0

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.message_type})"


def canonical_descriptors(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> bytes:
    ordered = descriptor_pb2.FileDescriptorSet(file=sorted(files, key=lambda f: f.name))
    return ordered.SerializeToString(deterministic=True)


def new_task_type(
    name: str, version: Version, message_type: str, descriptors: bytes, now: Micros
) -> TaskType:
    """Checks that the descriptors hold the message, complete with its imports, and that the
    message's own task option (if it has one) names the same task and version."""
    task_type = TaskType(name, version, message_type, descriptors, now)
    message = _descriptor(task_type)
    declared = message.GetOptions().Extensions[task_pb2.task]
    if declared.name and (declared.name, declared.version) != (name, str(version)):
        raise InvalidArgument(
            f"message_type {shown(message_type)} declares (conveyor.v1.task) = "
            f"{{name: {shown(declared.name)}, version: {shown(declared.version)}}}, which "
            f"differs from name {shown(name)} and version {str(version)!r} in the request"
        )
    return task_type


def check_payload(task_type: TaskType, payload: bytes, field: str) -> None:
    """Refuses a payload that is not the contract's message: bytes that do not parse, or
    fields the message does not have (a payload of another message or another major
    version). Says which field."""
    message = message_class(task_type)()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise InvalidArgument(
            f"{field} is not a {task_type.label}: {shown(exc, limit=200)}"
        ) from None
    for path, number in _unknown_fields(message, ""):
        raise InvalidArgument(
            f"{field} is not a {task_type.label}: it has field number {number}"
            f"{' in ' + shown(path, limit=200) if path else ''}, which the message does not define"
        )


@functools.lru_cache(maxsize=256)
def message_class(task_type: TaskType) -> type[Message]:
    """Registrations never change, so a class built once serves every later enqueue."""
    return message_factory.GetMessageClass(_descriptor(task_type))


def _descriptor(task_type: TaskType) -> Descriptor:
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(task_type.descriptors).file
    except DecodeError:
        raise InvalidArgument("descriptors is not a FileDescriptorSet") from None
    pool = descriptor_pool.DescriptorPool()
    for file in _dependencies_first(files):
        try:
            pool.Add(file)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"descriptors: file {shown(file.name)} is invalid: {shown(exc, limit=200)}"
            ) from None
    try:
        return pool.FindMessageTypeByName(task_type.message_type)
    except KeyError:
        raise InvalidArgument(
            f"message_type {shown(task_type.message_type)} is not in descriptors (give the full "
            "name, package included, e.g. acme.email.v1.SendEmail)"
        ) from None


def _dependencies_first(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
) -> list[descriptor_pb2.FileDescriptorProto]:
    by_name = {f.name: f for f in files}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    done: set[str] = set()

    def visit(file: descriptor_pb2.FileDescriptorProto, trail: tuple[str, ...]) -> None:
        if file.name in done:
            return
        if file.name in trail:
            raise InvalidArgument(f"descriptors: import cycle through {shown(file.name)}")
        for dependency in file.dependency:
            if dependency not in by_name:
                raise InvalidArgument(
                    f"descriptors: {shown(file.name)} imports {shown(dependency)}, which is "
                    "missing (include every imported file, e.g. protoc --include_imports)"
                )
            visit(by_name[dependency], (*trail, file.name))
        done.add(file.name)
        ordered.append(file)

    for file in files:
        visit(file, ())
    return ordered


def _unknown_fields(message: Message, path: str) -> Iterator[tuple[str, int]]:
    unknown = UnknownFieldSet(message)
    for index in range(len(unknown)):
        yield path, unknown[index].field_number
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type is None:
            continue
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    yield from _unknown_fields(item, f"{name}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _unknown_fields(item, f"{name}[{index}]")
        else:
            yield from _unknown_fields(value, name)
