"""The per-language file options of protos/conveyor/v1 (where each language's generated code
goes) never change once published: buf's FILE_SAME_*_PACKAGE rules are off in buf.yaml so
that they could be set once, and this pins them instead."""

from __future__ import annotations

import pytest
from conveyor.v1 import coordinator_pb2, task_pb2
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import FileDescriptorProto

SHARED = {
    "csharp_namespace": "Conveyor.V1",
    "go_package": "github.com/conveyor-dev/conveyor/gen/go/conveyor/v1;conveyorv1",
    "java_multiple_files": True,
    "java_package": "dev.conveyor.v1",
    "php_namespace": "Conveyor\\V1",
    "ruby_package": "Conveyor::V1",
}


@pytest.mark.parametrize(
    ("file", "outer_classname"),
    [(coordinator_pb2.DESCRIPTOR, "CoordinatorProto"), (task_pb2.DESCRIPTOR, "TaskProto")],
)
def test_file_options_stay_as_published(file: FileDescriptor, outer_classname: str) -> None:
    proto = FileDescriptorProto()
    file.CopyToProto(proto)

    options = {name: getattr(proto.options, name) for name in SHARED}

    assert options == SHARED
    assert proto.options.java_outer_classname == outer_classname
