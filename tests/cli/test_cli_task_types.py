"""`conveyor task-types ...` against a real coordinator, registering from a descriptor set
(what any language's toolchain can produce) instead of generated Python code."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import Conveyor
from conveyor import Client
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "tests" / "contracts" / "protos"


@pytest.fixture
def descriptor_set(tmp_path: Path) -> Path:
    """tests/contracts' email.proto as `protoc --include_imports --descriptor_set_out` writes."""
    out = tmp_path / "email.binpb"
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{REPO / 'protos'}",
            f"-I{CONTRACTS}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "acme/email/v1/email.proto",
        ]
    )
    assert code == 0
    return out


async def test_register_reads_name_and_version_from_the_task_option(
    conveyor: Conveyor, client: Client, descriptor_set: Path
) -> None:
    result = await conveyor(
        "task-types", "register", "acme.email.v1.SendEmail", "--descriptor-set", str(descriptor_set)
    )
    assert result.code == 0, result.stderr
    stored = await client.get_task_type("send_email", "1.2.0")
    assert stored.message_type == "acme.email.v1.SendEmail"


async def test_get_prints_json_with_the_files(conveyor: Conveyor, descriptor_set: Path) -> None:
    for message in ("acme.email.v1.SendEmail", "acme.email.v1.SendEmailV2"):
        await conveyor("task-types", "register", message, "--descriptor-set", str(descriptor_set))
    result = await conveyor("task-types", "get", "send_email", "--json")
    assert result.json()["version"] == "2.0.0"  # the highest without --version
    assert "conveyor/v1/task.proto" in result.json()["files"]


async def test_list_shows_every_version(conveyor: Conveyor, descriptor_set: Path) -> None:
    for message in ("acme.email.v1.SendEmail", "acme.email.v1.SendEmailV2"):
        await conveyor("task-types", "register", message, "--descriptor-set", str(descriptor_set))
    result = await conveyor("task-types", "list", "--json")
    assert [(t["name"], t["version"]) for t in result.json()] == [
        ("send_email", "1.2.0"),
        ("send_email", "2.0.0"),
    ]


async def test_message_without_task_option_needs_name_and_version(
    conveyor: Conveyor, descriptor_set: Path
) -> None:
    refused = await conveyor(
        "task-types", "register", "acme.email.v1.Unmarked", "--descriptor-set", str(descriptor_set)
    )
    named = await conveyor(
        "task-types",
        "register",
        "acme.email.v1.Unmarked",
        "--descriptor-set",
        str(descriptor_set),
        "--name",
        "note",
        "--version",
        "0.1.0",
    )
    assert refused.code == 2 and "task option" in refused.stderr
    assert named.code == 0, named.stderr


async def test_a_file_that_is_not_a_descriptor_set_is_a_usage_error(
    conveyor: Conveyor, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.binpb"
    bogus.write_bytes(b"\xff\xff\xff")
    result = await conveyor(
        "task-types", "register", "acme.email.v1.SendEmail", "--descriptor-set", str(bogus)
    )
    assert result.code == 2
    assert "not a FileDescriptorSet" in result.stderr


async def test_an_unregistered_task_type_is_not_found(conveyor: Conveyor) -> None:
    result = await conveyor("task-types", "get", "nope")
    assert result.code == 1
    assert result.stderr.startswith("error: NOT_FOUND:")
