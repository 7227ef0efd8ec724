"""Task contracts: the `(conveyor.v1.task)` option of a generated message, semantic versions,
and the descriptors that describe a message to the coordinator (and to other languages)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet
from google.protobuf.message import Message

from conveyor.v1 import task_pb2

_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


@dataclass(frozen=True, order=True)
class Version:
    """A MAJOR.MINOR.PATCH version; orders numerically (1.10.0 after 1.9.0)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a semantic version: give MAJOR.MINOR.PATCH, e.g. 1.2.0"
            )
        return cls(int(match[1]), int(match[2]), int(match[3]))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Contract:
    """What the task option of a message class says, with the class itself."""

    name: str
    version: str
    message_class: type[Message]

    @property
    def message_type(self) -> str:
        return str(self.message_class.DESCRIPTOR.full_name)


def is_message_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Message)


def contract_of(message_class: type[Message]) -> Contract:
    """The contract a generated message class declares; ValueError says how to declare one."""
    if not is_message_class(message_class):
        raise TypeError(
            f"expected a generated protobuf message class, got {type(message_class).__name__}"
        )
    descriptor = message_class.DESCRIPTOR
    options = descriptor.GetOptions()
    if not options.HasExtension(task_pb2.task):
        raise ValueError(
            f"{descriptor.full_name} has no task option: add "
            '`option (conveyor.v1.task) = {name: "...", version: "1.0.0"};` to the message '
            '(import "conveyor/v1/task.proto"), or pass name= and version='
        )
    task = options.Extensions[task_pb2.task]
    if not task.name or not task.version:
        raise ValueError(f"the task option of {descriptor.full_name} needs both name and version")
    Version.parse(task.version)
    return Contract(name=task.name, version=task.version, message_class=message_class)


def descriptor_set(message_class: type[Message]) -> FileDescriptorSet:
    """The message's file and every file it imports, transitively, each after the files it
    imports: the order a descriptor pool needs to load them one by one."""
    ordered: list[Any] = []
    seen: set[str] = set()

    # Any: the runtime hands out either the pure-Python or the upb descriptor class.
    def visit(file: Any) -> None:
        # Depth-first, post-order; the import graph of .proto files has no cycles.
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    visit(message_class.DESCRIPTOR.file)
    result = FileDescriptorSet()
    for file in ordered:
        # The bytes protoc embedded in the generated code: exactly what the author compiled.
        result.file.append(FileDescriptorProto.FromString(file.serialized_pb))
    return result


def decode(message_class: type[Message], payload: bytes) -> Any:
    """The payload parsed as `message_class`; DecodeError when it is not one."""
    message = message_class()
    message.ParseFromString(payload)
    return message


def message_class_from_set(descriptors: FileDescriptorSet, message_type: str) -> type[Message]:
    """A message class built from a descriptor set (what `protoc --include_imports
    --descriptor_set_out` or `buf build` writes), for registering a contract without
    generated Python code. ValueError says what is missing."""
    pool = descriptor_pool.DescriptorPool()
    by_name = {file.name: file for file in descriptors.file}
    added: set[str] = set()

    def add(file: FileDescriptorProto) -> None:
        if file.name in added:
            return
        for dependency in file.dependency:
            if dependency not in by_name:
                raise ValueError(
                    f"{file.name} imports {dependency}, which the descriptor set lacks: "
                    "build it with --include_imports"
                )
            add(by_name[dependency])
        pool.Add(file)
        added.add(file.name)

    for file in descriptors.file:
        add(file)
    try:
        descriptor = pool.FindMessageTypeByName(message_type)
    except KeyError:
        raise ValueError(f"the descriptor set has no message {message_type}") from None
    return message_factory.GetMessageClass(descriptor)
