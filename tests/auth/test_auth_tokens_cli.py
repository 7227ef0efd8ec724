"""`conveyor tokens create|list|revoke`, and the SDK taking the token from `token=` or
$CONVEYOR_TOKEN."""

from __future__ import annotations

from pathlib import Path

import pytest
from conveyor import Client
from conveyor.errors import ConveyorError
from conveyor_server.cli import main
from conveyor_server.main import Coordinator


def _create(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> str:
    assert main(["tokens", "create", *args, "--db", db]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


async def test_created_token_on_the_last_line_works_with_the_sdk(
    auth_coordinator: Coordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _create(capsys, auth_coordinator.config.db_url, "reporter", "--role", "producer")
    async with Client(auth_coordinator.address, token=token, timeout=10) as client:
        assert (await client.server_info()).max_payload_bytes > 0


async def test_sdk_takes_the_token_from_the_environment(
    auth_coordinator: Coordinator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = _create(capsys, auth_coordinator.config.db_url, "env-user", "--role", "producer")
    monkeypatch.setenv("CONVEYOR_TOKEN", token)
    async with Client(auth_coordinator.address, timeout=10) as client:
        assert (await client.server_info()).max_payload_bytes > 0


async def test_sdk_without_a_token_is_refused(auth_coordinator: Coordinator) -> None:
    async with Client(auth_coordinator.address, timeout=10) as client:
        with pytest.raises(ConveyorError, match="token"):
            await client.server_info()


async def test_list_shows_names_roles_and_namespaces_but_no_token(
    auth_coordinator: Coordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    db = auth_coordinator.config.db_url
    token = _create(
        capsys, db, "mailer", "--role", "worker", "--namespace", "team-a", "--queues", "mail-*"
    )
    assert main(["tokens", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "mailer" in listing and "worker" in listing and "team-a" in listing
    assert "mail-*" in listing
    assert token not in listing and token[4:12] not in listing


async def test_revoke_removes_the_token_from_the_list(
    auth_coordinator: Coordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    db = auth_coordinator.config.db_url
    _create(capsys, db, "temp", "--role", "admin")
    assert main(["tokens", "revoke", "temp", "--db", db]) == 0
    capsys.readouterr()
    assert main(["tokens", "list", "--db", db]) == 0
    assert "temp" not in capsys.readouterr().out


def test_revoking_an_unknown_name_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokens", "revoke", "nobody", "--db", f"sqlite:///{tmp_path}/t.db"]) == 1
    assert "no token named" in capsys.readouterr().err


def test_creating_a_name_twice_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/t.db"
    assert main(["tokens", "create", "x", "--role", "admin", "--db", db]) == 0
    assert main(["tokens", "create", "x", "--role", "admin", "--db", db]) == 1
    assert "exists already" in capsys.readouterr().err
