"""Issue 7, item 8: one coordinator per SQLite file. The store holds an exclusive lock on a
file beside the database while it is open; a second coordinator is refused with a message
naming the file and the coordinator that holds it."""

from __future__ import annotations

import os

import pytest
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.errors import DatabaseInUse
from conveyor_server.main import Coordinator
from conveyor_server.store.dialects import lock_path

# SQLite-only: the lock file that keeps one coordinator per SQLite file.
pytestmark = pytest.mark.sqlite_only


async def test_a_second_coordinator_on_the_same_file_is_refused(
    coordinator: Coordinator, server_config: ServerConfig, clock: FakeClock
) -> None:
    with pytest.raises(DatabaseInUse) as refused:
        await Coordinator.start(server_config, clock=clock)
    message = str(refused.value)
    assert "conveyor.db.lock" in message
    assert f"pid {os.getpid()}, serving on {coordinator.address}" in message


async def test_the_lock_is_released_when_the_coordinator_stops(
    server_config: ServerConfig, clock: FakeClock
) -> None:
    first = await Coordinator.start(server_config, clock=clock)
    await first.stop(grace=1.0)
    second = await Coordinator.start(server_config, clock=clock)
    await second.stop(grace=1.0)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "postgresql+asyncpg://user:secret@db.example/conveyor",
    ],
)
def test_only_a_file_backed_sqlite_database_is_locked(url: str) -> None:
    assert lock_path(url) is None


def test_the_lock_file_sits_beside_the_database() -> None:
    path = lock_path("sqlite:////var/lib/conveyor/conveyor.db")
    assert str(path) == "/var/lib/conveyor/conveyor.db.lock"
