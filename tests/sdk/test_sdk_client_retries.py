"""Producers and retries (issue 7, item 9): `Client.enqueue` and `enqueue_batch` retry
UNAVAILABLE only when every job carries an idempotency key (given, or generated with
`auto_idempotency_keys`), so a coordinator restart never stores a job twice; without a key
they raise at once. Against real coordinators on one SQLite file and one port, restarted
while the client retries."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator

import pytest
from conveyor import AlreadyExists, Client, EnqueueRetry, Job, JobSpec, Unavailable
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import SystemClock
from conveyor_server.main import Coordinator

# Retries often and long enough that no restart in these tests outlasts them.
PATIENT = EnqueueRetry(max_attempts=1000, initial_backoff=0.01, max_backoff=0.05)
# How long the coordinator stays down: the client meanwhile retries (or gives up).
DOWNTIME = 0.3


class Coordinators:
    """One coordinator at a time on the same database file and port: stop it, start the next."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.current: Coordinator | None = None
        self.port = 0

    async def start(self) -> Coordinator:
        config = dataclasses.replace(self.config, listen=f"127.0.0.1:{self.port}")
        self.current = await Coordinator.start(config, clock=SystemClock())
        self.port = int(self.current.address.rsplit(":", 1)[1])
        return self.current

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop(grace=1.0)
            self.current = None

    async def restart_after(self, delay: float) -> None:
        await self.stop()
        await asyncio.sleep(delay)  # the outage the client must ride out (not a sync point)
        await self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class ReplyLosingRelay:
    """A TCP relay in front of the coordinator that can drop what the coordinator sends and
    then cut the client's connections: the client's call fails with UNAVAILABLE although
    the coordinator did what it asked, as when a reply is lost to a crash or a network cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.dropping = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        """Closes every open connection; new ones are relayed faithfully again."""
        self.dropping = False
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()  # the coordinator is down: the client sees UNAVAILABLE
            return
        self._writers.append(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer, downstream=False),
            self._pump(up_reader, writer, downstream=True),
        )

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, downstream: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if downstream and self.dropping:
                    continue
                sink.write(data)
                await sink.drain()
        sink.close()


@pytest.fixture
async def coordinators(server_config: ServerConfig) -> AsyncIterator[Coordinators]:
    coordinators = Coordinators(server_config)
    await coordinators.start()
    yield coordinators
    await coordinators.stop()


@pytest.fixture
async def relay(coordinators: Coordinators) -> AsyncIterator[ReplyLosingRelay]:
    relay = ReplyLosingRelay(coordinators.port)
    await relay.start()
    yield relay
    await relay.close()


async def stored_jobs(address: str, queue: str) -> list[Job]:
    async with Client(address) as direct:
        return (await direct.list_jobs(queue)).jobs


async def lose_the_reply(
    relay: ReplyLosingRelay,
    coordinators: Coordinators,
    call: asyncio.Task[object],
) -> None:
    """Lets `call` reach the coordinator, drops its reply once the job is stored, cuts the
    connection, and restarts the coordinator after DOWNTIME."""
    relay.dropping = True
    async with Client(coordinators.address) as direct:
        for _ in range(3000):  # the store can only be polled; this bounds the wait
            if (await direct.list_jobs("q")).jobs or call.done():
                break
            await asyncio.sleep(0.01)
    relay.cut()
    await coordinators.restart_after(DOWNTIME)


async def test_enqueue_with_a_key_is_retried_across_a_restart_without_a_duplicate(
    coordinators: Coordinators, relay: ReplyLosingRelay
) -> None:
    async with Client(relay.address, enqueue_retry=PATIENT) as client:
        await client.list_queues()  # the channel is connected before replies are dropped
        call = asyncio.create_task(client.enqueue("q", "t", b"x", idempotency_key="order-17"))
        await lose_the_reply(relay, coordinators, call)
        result = await call

    jobs = await stored_jobs(coordinators.address, "q")
    assert result.deduplicated
    assert [job.job_id for job in jobs] == [result.job_id]


async def test_auto_idempotency_keys_make_an_enqueue_without_a_key_safe_to_retry(
    coordinators: Coordinators, relay: ReplyLosingRelay
) -> None:
    async with Client(relay.address, enqueue_retry=PATIENT, auto_idempotency_keys=True) as client:
        await client.list_queues()
        call = asyncio.create_task(client.enqueue("q", "t", b"x"))
        await lose_the_reply(relay, coordinators, call)
        result = await call

    jobs = await stored_jobs(coordinators.address, "q")
    assert result.deduplicated
    assert [job.job_id for job in jobs] == [result.job_id]
    assert (jobs[0].idempotency_key or "").startswith("auto-")


async def test_enqueue_without_a_key_is_not_retried(
    coordinators: Coordinators, relay: ReplyLosingRelay
) -> None:
    async with Client(relay.address, enqueue_retry=PATIENT) as client:
        await client.list_queues()
        call = asyncio.create_task(client.enqueue("q", "t", b"x"))
        await lose_the_reply(relay, coordinators, call)

        with pytest.raises(Unavailable):
            await call
        await client.list_queues()  # the client works again, and has sent nothing more

    assert len(await stored_jobs(coordinators.address, "q")) == 1


async def test_enqueue_batch_with_every_key_is_retried_until_the_coordinator_is_back(
    coordinators: Coordinators,
) -> None:
    await coordinators.stop()
    specs = [JobSpec("q", "t", idempotency_key=f"k{i}") for i in range(3)]
    async with Client(coordinators.address, enqueue_retry=PATIENT) as client:
        call = asyncio.create_task(client.enqueue_batch(specs))
        await coordinators.restart_after(DOWNTIME)
        results = await call

    jobs = await stored_jobs(coordinators.address, "q")
    assert sorted(job.job_id for job in jobs) == sorted(r.job_id for r in results)
    assert len(jobs) == 3


async def test_enqueue_batch_with_a_job_without_a_key_is_not_retried(
    coordinators: Coordinators,
) -> None:
    await coordinators.stop()
    specs = [JobSpec("q", "t", idempotency_key="k0"), JobSpec("q", "t")]
    async with Client(coordinators.address, enqueue_retry=PATIENT) as client:
        with pytest.raises(Unavailable):
            await client.enqueue_batch(specs)
    await coordinators.start()

    assert await stored_jobs(coordinators.address, "q") == []


async def test_other_errors_are_not_retried(coordinators: Coordinators) -> None:
    async with Client(coordinators.address, enqueue_retry=PATIENT) as client:
        await client.enqueue("q", "t", b"a", idempotency_key="same")
        with pytest.raises(AlreadyExists):
            await client.enqueue("q", "t", b"other payload", idempotency_key="same")


def test_backoff_grows_exponentially_up_to_its_cap_and_jitter_only_shortens_it() -> None:
    retry = EnqueueRetry(initial_backoff=0.1, multiplier=2.0, max_backoff=1.0, jitter=0.5)
    rng = random.Random(7)

    pauses = [[retry.backoff(n, rng) for n in range(1, 7)] for _ in range(200)]

    for n, full in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        seen = [row[n] for row in pauses]
        assert all(full * 0.5 <= pause <= full for pause in seen)
        assert max(seen) - min(seen) > full * 0.3  # the jitter spreads them
