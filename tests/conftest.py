"""Shared fixtures: a real coordinator on a loopback port over a real database, driven by a
fake clock (`coordinator`, `stub`) or on real time (`live_coordinator`, `client`,
`start_worker`: a worker's heartbeats, long-polls and retry delays run on real time).

The store conformance suite: tests under the directories in CONFORMANCE_DIRS that use these
fixtures run once per database kind (`db_kind`: sqlite, postgresql; see tests/databases.py);
elsewhere they run on SQLite. A test that needs SQLite itself (its lock file, PRAGMA
max_page_count as a full disk) is marked `@pytest.mark.sqlite_only`."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from conveyor import Client, Worker
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock, SystemClock
from conveyor_server.main import Coordinator
from conveyor_server.store.sql import SqlStore
from databases import DB_KINDS, PostgresServer

TESTS = Path(__file__).parent
# Where the wire-level and store tests live: these run on every database kind.
CONFORMANCE_DIRS = tuple(TESTS / name for name in ("server", "flow", "store", "unit", "model"))


# Every event loop the tests close must have no task left pending: such a task (a coordinator
# started on a loop of the test's own and never stopped, say) is destroyed by the garbage
# collector later, during some other test, with a "Task was destroyed but it is pending!" error
# and the pause of collecting everything it holds. asyncio.run and pytest-asyncio cancel what is
# left before closing; a loop closed by hand does not, and the test that closes it fails here.
_close_loop = asyncio.BaseEventLoop.close


def _close_loop_without_pending_tasks(loop: asyncio.BaseEventLoop) -> None:
    pending = [] if loop.is_closed() else [t for t in asyncio.all_tasks(loop) if not t.done()]
    _close_loop(loop)
    if pending:
        coroutines = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in pending)
        raise AssertionError(
            f"an event loop was closed with {len(pending)} task(s) pending: "
            + ", ".join(f"{name} x{count}" for name, count in sorted(coroutines.items()))
        )


asyncio.BaseEventLoop.close = _close_loop_without_pending_tasks  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: needs SQLite itself; left out of the PostgreSQL runs"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    # What is alive after collection (modules, test items: ~200,000 objects) lives all session:
    # moved out of the collector's reach, a full collection no longer walks it each time. The
    # coordinators under test run in this process, so a shorter pause is a shorter stall of
    # their heartbeat and lease handling. Measured (tests/http, test_sdk_worker, test_enqueue;
    # shared machine): collector CPU 2.0 s -> 1.4 s, longest pause 1.1 s -> 0.3 s.
    gc.collect()
    gc.freeze()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" not in metafunc.fixturenames:
        return
    path = Path(str(metafunc.definition.path))
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    if any(path.is_relative_to(d) for d in CONFORMANCE_DIRS):
        metafunc.parametrize("db_kind", DB_KINDS)


@pytest.fixture
def db_kind() -> str:
    """The database kind a test runs on (parametrised in CONFORMANCE_DIRS)."""
    return "sqlite"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the store opened once (so migrated to head) and closed: each test gets a
    copy, the same file a first start leaves, without running every migration again."""
    path = tmp_path_factory.mktemp("template") / "conveyor.db"

    async def open_and_close() -> None:
        store = SqlStore(f"sqlite:///{path}", sqlite_synchronous="NORMAL")
        await store.open()
        await store.close()

    asyncio.run(open_and_close())
    # Closed cleanly: everything is in the main file (no write-ahead log left to copy).
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def db_url(db_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database of the kind under test, empty but for the schema."""
    if db_kind == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.clean_database()
    path = tmp_path / "conveyor.db"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_config(db_url: str) -> ServerConfig:
    return ServerConfig(
        db_url=db_url,
        listen="127.0.0.1:0",
        log_level="warning",
        # Commits still reach the OS before a reply (a killed process loses nothing), but are
        # not fsynced each: the suite stays fast. The SIGKILL test runs with the default FULL.
        sqlite_synchronous="NORMAL",
    )


@pytest.fixture
async def coordinator(server_config: ServerConfig, clock: FakeClock) -> AsyncIterator[Coordinator]:
    """A coordinator driven by the fake clock; its background loops still run."""
    coord = await Coordinator.start(server_config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def channel(coordinator: Coordinator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(coordinator.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> rpc.CoordinatorServiceStub:
    return rpc.CoordinatorServiceStub(channel)


@pytest.fixture
async def live_coordinator(server_config: ServerConfig) -> AsyncIterator[Coordinator]:
    """A coordinator on the system clock, for SDK workers and processes that live in real time."""
    coord = await Coordinator.start(server_config, clock=SystemClock())
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def live_http_coordinator(server_config: ServerConfig) -> AsyncIterator[Coordinator]:
    """A live coordinator that also serves the HTTP/JSON API (push apps in background mode
    heartbeat and report through it)."""
    config = dataclasses.replace(server_config, http_listen="127.0.0.1:0")
    coord = await Coordinator.start(config, clock=SystemClock())
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def client(live_coordinator: Coordinator) -> AsyncIterator[Client]:
    async with Client(live_coordinator.address) as c:
        yield c


@pytest.fixture
async def start_worker() -> AsyncIterator[Callable[[Worker], asyncio.Task[None]]]:
    """Starts `worker.run()` in a task; stops it (and waits) at the end of the test."""
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(worker: Worker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        started.append((worker, task))
        return task

    yield start
    for worker, task in started:
        worker.stop()
        await asyncio.wait_for(task, timeout=10)
