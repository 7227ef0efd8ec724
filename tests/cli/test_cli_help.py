"""`--help` on every command group (the real executable) and on every command (in process,
which is quicker than a process per command and exercises the same parser)."""

from __future__ import annotations

import argparse

import pytest
from cli_support import run_cli
from conveyor_server.cli import build_parser

GROUPS = ["worker", "enqueue", "jobs", "queues", "schedules", "task-types", "conformance"]


@pytest.mark.parametrize("group", GROUPS)
async def test_help_of_each_group_exits_0(group: str) -> None:
    result = await run_cli(group, "--help")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"usage: conveyor {group}")


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    """Every command path below `parser`, e.g. ["queues", "update"]."""
    found: list[list[str]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append([*path, name])
                found.extend(_commands(sub, [*path, name]))
    return found


def test_help_of_every_command_has_a_description_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = _commands(build_parser(), [])
    assert ["schedules", "update"] in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*command, "--help"])
        assert exit_.value.code == 0, command
        text = capsys.readouterr().out
        assert text.startswith("usage: conveyor " + " ".join(command)), command
        assert text.split("\n\n")[1].strip(), f"{command} has no description"


async def test_a_group_without_a_command_is_a_usage_error() -> None:
    result = await run_cli("jobs")
    assert result.code == 2
    assert "required" in result.stderr
