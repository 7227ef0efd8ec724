"""The multi-coordinator chaos run (issue 9, item 5), shared by tests/chaos/test_chaos.py and
bench/chaos.py.

N `conveyor serve` processes share one fresh PostgreSQL database. Python SDK workers (in this
process, on asyncio) are spread over them, each behind a gRPC interceptor that writes every
lease it got, and every heartbeat and receipt it sent with the coordinator's answer, into an
append-only WireLog. Producers enqueue the jobs in batches through all coordinators, each job
with an idempotency key, and remember which enqueues were acknowledged. A 1-second cron
schedule (misfire policy CATCH_UP, overlap allowed) runs throughout. Mid-run one coordinator
is SIGKILLed (with `kill_every`, one every that many seconds until every job has finished)
and started again on the same port.

When every job has finished and the schedule has fired for every second up to then, the
schedule is paused, everything stops, and chaos_checks.py judges what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from traceback import format_exception
from typing import Any, cast

import grpc
import sqlalchemy as sa
from chaos_checks import (
    FINISHED,
    MICROS,
    JobRow,
    LeaseSeen,
    ReportSeen,
    WireLog,
    double_leases,
    fires_once,
    nothing_lost,
    one_success_each,
)
from conveyor import Client, JobContext, JobSpec, MisfirePolicy, RetryPolicy, Worker, WorkerConfig
from conveyor.client import channel_options
from conveyor.errors import ConveyorError
from conveyor.v1 import coordinator_pb2_grpc as rpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

QUEUE = "chaos"
CRON_QUEUE = "chaos-cron"
SCHEDULE = "chaos-tick"
READY_TIMEOUT = 60.0  # a guard against a coordinator that never serves, not a timed assertion
# Workers and clients come back quickly after a restart instead of after gRPC's long backoff.
_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass
class ChaosConfig:
    jobs: int = 20_000
    coordinators: int = 3
    workers_per_coordinator: int = 2
    concurrency: int = 20  # per worker
    batch_size: int = 100  # jobs per EnqueueBatch
    # One SIGKILL (of the cron leader) once this fraction of the jobs is acknowledged; or,
    # with kill_every, one every that many seconds until every job has finished (round robin
    # over the coordinators).
    kill_at_fraction: float = 0.3
    kill_every: float | None = None
    lease_seconds: float = 4.0
    # Every n-th job runs this long (past its first heartbeat, at a third of the lease), so
    # that some leases are extended, and some across the kill.
    slow_every: int = 50
    slow_seconds: float = 2.0
    db_pool_size: int = 3
    deadline: float = 900.0  # a guard against hanging, not a timed assertion
    log_dir: Path | None = None  # coordinators' stderr, one file per start


@dataclass
class ChaosReport:
    config: ChaosConfig
    seconds: float = 0.0
    acknowledged: int = 0
    jobs_in_db: int = 0
    leases: int = 0
    reruns: int = 0  # leases beyond one per job: lost replies, expired leases
    heartbeats: int = 0  # accepted
    kills: list[str] = field(default_factory=list)
    fires: int = 0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.acknowledged} of {self.config.jobs} enqueues acknowledged, "
            f"{self.jobs_in_db} jobs in the database, {self.leases} leases "
            f"({self.reruns} reruns), {self.heartbeats} heartbeats accepted, "
            f"{len(self.kills)} SIGKILLs ({'; '.join(self.kills)}), "
            f"{self.fires} cron fires, {len(self.violations)} violations, "
            f"{self.seconds:.1f} s"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Coordinator:
    """One `conveyor serve` process slot: a port, and the process serving on it now."""

    def __init__(self, index: int, db_url: str, config: ChaosConfig) -> None:
        self.index = index
        self.address = f"127.0.0.1:{free_port()}"
        self._db_url = db_url
        self._config = config
        self._starts = 0
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        self._starts += 1
        stderr: Any = asyncio.subprocess.DEVNULL
        if self._config.log_dir is not None:
            path = self._config.log_dir / f"coordinator-{self.index}-{self._starts}.log"
            stderr = path.open("w")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_server",
            "serve",
            "--db",
            self._db_url,
            "--listen",
            self.address,
            "--db-pool-size",
            str(self._config.db_pool_size),
            "--log-level",
            "warning",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        if stderr is not asyncio.subprocess.DEVNULL:
            stderr.close()  # the process has its own copy
        await self._wait_until_serving()

    async def _wait_until_serving(self) -> None:
        assert self.process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"coordinator {self.index} exited with code {self.process.returncode}"
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if loop.time() > deadline:
                    raise TimeoutError(f"coordinator {self.index} not serving")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30.0)
        except TimeoutError:
            process.kill()
            await process.wait()


class _WireObserver(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Writes what one worker leased and reported, and the answers, into the WireLog."""

    def __init__(self, log: WireLog, worker: str) -> None:
        self._log = log
        self._worker = worker

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        name = method.rsplit("/", 1)[-1]
        sent = time.monotonic()
        call = await continuation(details, request)
        if name not in ("Lease", "HeartbeatBatch", "ReceiptBatch", "Heartbeat", "Receipt"):
            return call
        try:
            reply = await call
        except grpc.aio.AioRpcError as error:
            self._failed(name, request, sent, error.code())
            return call
        self._answered(name, request, reply, sent)
        return call

    def _failed(self, name: str, request: Any, sent: float, code: grpc.StatusCode) -> None:
        if name == "Lease":
            return  # no lease was seen
        kind, items = _items(name, request)
        for item in items:
            self._log.reports.append(
                ReportSeen(
                    kind,
                    item.job_id,
                    item.lease_token,
                    sent,
                    f"transport:{code.name}",
                    getattr(item, "outcome", 0),
                )
            )

    def _answered(self, name: str, request: Any, reply: Any, sent: float) -> None:
        now = time.monotonic()
        if name == "Lease":
            for job in reply.jobs:
                self._log.leases.append(
                    LeaseSeen(
                        job.job_id,
                        job.lease_token,
                        job.attempt,
                        now,
                        _monotonic(job.lease_expires_at),
                        self._worker,
                    )
                )
            return
        kind, items = _items(name, request)
        results = list(reply.results) if name.endswith("Batch") else [None]
        for item, result in zip(items, results, strict=True):
            code = "OK" if result is None or result.code == 0 else _code_name(result.code)
            expires = None
            if kind == "heartbeat" and code == "OK":
                response = reply if result is None else result.response
                expires = _monotonic(response.lease_expires_at)
            self._log.reports.append(
                ReportSeen(
                    kind,
                    item.job_id,
                    item.lease_token,
                    sent,
                    code,
                    getattr(item, "outcome", 0),
                    expires,
                )
            )


def _items(name: str, request: Any) -> tuple[str, list[Any]]:
    if name == "HeartbeatBatch":
        return "heartbeat", list(request.heartbeats)
    if name == "ReceiptBatch":
        return "receipt", list(request.receipts)
    return ("heartbeat" if name == "Heartbeat" else "receipt"), [request]


def _monotonic(stamp: Any) -> float:
    """A coordinator's wall-clock Timestamp on this process's monotonic clock."""
    return float(stamp.ToMicroseconds() / MICROS - time.time() + time.monotonic())


def _code_name(number: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), str(number))


class ObservedWorker(Worker):
    """A Worker whose channel carries the WireObserver. It reuses the SDK's own run phases
    (`_prepare_run`, `_work`): the only difference is the interceptor on the channel."""

    def __init__(self, address: str, log: WireLog, **kwargs: Any) -> None:
        super().__init__(address, [QUEUE, CRON_QUEUE], channel_options=_RECONNECT, **kwargs)
        self._observer = _WireObserver(log, self.config.worker_id)

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        self._prepare_run()
        channel = grpc.aio.insecure_channel(
            self.address,
            options=channel_options(self._channel_options),
            interceptors=[cast(Any, self._observer)],
        )
        async with channel:
            await self._work(rpc.CoordinatorServiceStub(channel), install_signal_handlers)


class ChaosRun:
    def __init__(self, config: ChaosConfig, db_url: str, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.log = WireLog()
        self.acknowledged: dict[str, str] = {}  # idempotency key -> job id
        self.report = ChaosReport(config)
        server_url = db_url.replace("+psycopg", "")
        self.engine = sa.create_engine(db_url if "+" in db_url else _psycopg(db_url))
        self.coordinators = [Coordinator(i, server_url, config) for i in range(config.coordinators)]
        self.clients: list[Client] = []
        self.producers_done = asyncio.Event()
        self.drained = asyncio.Event()
        self.failures: list[str] = []
        self.ending = False  # set when the workers are told to stop
        # Set once kill_at_fraction of the jobs are acknowledged (or the producers are done).
        self.kill_due = asyncio.Event()

    # -- the database, read directly (the run owns it) -----------------------------------

    async def _scalar(self, query: str, **params: Any) -> Any:
        def read() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(sa.text(query), params).scalar()

        return await asyncio.to_thread(read)

    async def _unfinished(self, queue: str) -> int:
        count: int = await self._scalar(
            "SELECT count(*) FROM jobs WHERE queue = :queue AND state NOT IN (4, 5, 6)",
            queue=queue,
        )
        return count

    async def _until(self, ready: Callable[[], Any], what: str, deadline: float) -> None:
        while not await ready():
            if self.failures:
                raise RuntimeError("chaos run: " + "; ".join(self.failures))
            if time.monotonic() > deadline:
                raise TimeoutError(f"chaos run: gave up waiting until {what}")
            await asyncio.sleep(0.5)

    # -- phases ----------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        started = time.monotonic()
        deadline = started + self.config.deadline
        workers: list[ObservedWorker] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            # All at once on the empty database: they migrate it one after the other.
            await asyncio.gather(*(c.start() for c in self.coordinators))
            self.say(f"{len(self.coordinators)} coordinators serving")
            self.clients = [
                Client(c.address, channel_options=_RECONNECT) for c in self.coordinators
            ]
            first_fire = await self._create_schedule()
            for coordinator in self.coordinators:
                for _ in range(self.config.workers_per_coordinator):
                    worker = self._worker(coordinator.address)
                    workers.append(worker)
                    task = asyncio.create_task(worker.run())
                    task.add_done_callback(self._worker_ended)
                    tasks.append(task)
            chaos = asyncio.create_task(self._chaos())
            tasks.append(chaos)
            await self._produce()
            self.producers_done.set()
            self.kill_due.set()
            self.say(f"{len(self.acknowledged)} enqueues acknowledged")
            await self._until(
                lambda: self._no_unfinished(QUEUE), "every chaos job has finished", deadline
            )
            self.drained.set()
            await chaos
            covered_until = await self._stop_schedule(deadline)
            await self._until(
                lambda: self._no_unfinished(CRON_QUEUE), "every cron job has finished", deadline
            )
        finally:
            self.ending = True
            for worker in workers:
                worker.stop()
            if not self.drained.is_set():  # a failed run: no more kills
                for task in tasks[len(workers) :]:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in self.clients:
                await client.close()
            await asyncio.gather(*(c.stop() for c in self.coordinators))
        await self._judge(first_fire, covered_until)
        self.report.seconds = time.monotonic() - started
        self.engine.dispose()
        return self.report

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """A worker must run until the end: one that stops early is a failure of the run."""
        if self.ending:
            return
        error = None if task.cancelled() else task.exception()
        self.failures.append(f"a worker stopped early ({error!r})")
        traceback = "".join(format_exception(error)) if error is not None else ""
        self.say(f"a worker stopped early: {traceback or 'cancelled'}")

    async def _no_unfinished(self, queue: str) -> bool:
        return await self._unfinished(queue) == 0

    def _worker(self, address: str) -> ObservedWorker:
        worker = ObservedWorker(
            address,
            self.log,
            config=WorkerConfig(concurrency=self.config.concurrency, shutdown_grace=10.0),
        )
        slow_every, slow_seconds = self.config.slow_every, self.config.slow_seconds

        @worker.task("work")
        async def work(job: JobContext) -> bytes:
            if slow_every and int(job.payload) % slow_every == 0:
                await asyncio.sleep(slow_seconds)
            return job.payload

        @worker.task("tick")
        async def tick(job: JobContext) -> None:
            return None

        return worker

    def _spec(self, queue: str, task_type: str, payload: bytes, key: str | None) -> JobSpec:
        return JobSpec(
            queue=queue,
            task_type=task_type,
            payload=payload,
            idempotency_key=key,
            max_attempts=100,
            lease_duration=self.config.lease_seconds,
            retry_policy=RetryPolicy(initial_backoff=timedelta(seconds=0.1), multiplier=1.0),
        )

    async def _create_schedule(self) -> int:
        schedule = await self.clients[0].create_schedule(
            SCHEDULE,
            "* * * * * *",
            self._spec(CRON_QUEUE, "tick", b"", None),
            misfire_policy=MisfirePolicy.CATCH_UP,
            catch_up_limit=500,
        )
        assert schedule.next_fire_at is not None
        return round(schedule.next_fire_at.timestamp() * MICROS)

    async def _produce(self) -> None:
        size = self.config.batch_size
        batches = iter(range(0, self.config.jobs, size))

        async def producer(home: int) -> None:
            for start in batches:
                specs = [
                    self._spec(QUEUE, "work", str(i).encode(), f"chaos-{i}")
                    for i in range(start, min(start + size, self.config.jobs))
                ]
                await self._enqueue(specs, home)

        await asyncio.gather(*(producer(i) for i in range(len(self.clients))))

    async def _enqueue(self, specs: list[JobSpec], home: int) -> None:
        """Sends the batch through its producer's coordinator; while one is away (its
        client's own UNAVAILABLE retries used up), through the next. The keys make a resend
        harmless."""
        for turn in range(len(self.clients) * 3):
            client = self.clients[(home + turn) % len(self.clients)]
            try:
                results = await client.enqueue_batch(specs)
            except ConveyorError:
                continue
            for spec, result in zip(specs, results, strict=True):
                assert spec.idempotency_key is not None
                self.acknowledged[spec.idempotency_key] = result.job_id
            if len(self.acknowledged) >= self.config.kill_at_fraction * self.config.jobs:
                self.kill_due.set()
            return

    async def _chaos(self) -> None:
        if self.config.kill_every is None:
            await self.kill_due.wait()
            await self._kill_and_restart(await self._cron_leader())
            return
        turn = 0
        while not self.drained.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), self.config.kill_every)
            if not self.drained.is_set():
                await self._kill_and_restart(self.coordinators[turn % len(self.coordinators)])
                turn += 1

    async def _cron_leader(self) -> Coordinator:
        """The coordinator running the cron firer (so the kill also moves leadership), or
        the first if none has claimed it yet."""
        holder = await self._scalar("SELECT holder FROM leaders WHERE service = 'cron'") or ""
        for coordinator in self.coordinators:
            if f":{coordinator.pid}:" in holder:
                return coordinator
        return self.coordinators[0]

    async def _kill_and_restart(self, victim: Coordinator) -> None:
        pid = victim.pid
        await victim.kill()
        killed_at = time.monotonic()
        await victim.start()
        self.report.kills.append(
            f"coordinator {victim.index} (pid {pid}) down {time.monotonic() - killed_at:.1f} s"
        )
        self.say(f"SIGKILLed and restarted coordinator {victim.index}")

    async def _stop_schedule(self, deadline: float) -> int:
        """Waits until the schedule has fired for every second up to now, pauses it, and
        returns the last fire time it owes (microseconds)."""
        now = round(time.time() * MICROS)

        async def caught_up() -> bool:
            next_fire = await self._scalar(
                "SELECT next_fire_at FROM schedules WHERE name = :name", name=SCHEDULE
            )
            return bool(next_fire is not None and next_fire > now)

        await self._until(caught_up, "the schedule has fired up to the end of the run", deadline)
        for client in self.clients:
            try:
                await client.pause_schedule(SCHEDULE)
                break
            except ConveyorError:
                continue
        # The last fire time at or before `now` (every second is one).
        return now - now % MICROS

    async def _judge(self, first_fire: int, covered_until: int) -> None:
        def read() -> tuple[list[JobRow], list[tuple[int, str | None]]]:
            with self.engine.connect() as conn:
                jobs = [
                    JobRow(*row)
                    for row in conn.execute(
                        sa.text("SELECT id, queue, state, lease_token FROM jobs")
                    )
                ]
                fires = [
                    (int(at), job)
                    for at, job in conn.execute(
                        sa.text(
                            "SELECT fire_at, job_id FROM schedule_fires WHERE schedule = :name "
                            "ORDER BY fire_at"
                        ),
                        {"name": SCHEDULE},
                    )
                ]
            return jobs, fires

        jobs, fires = await asyncio.to_thread(read)
        by_id = {job.job_id: job for job in jobs}
        report = self.report
        report.acknowledged = len(self.acknowledged)
        report.jobs_in_db = sum(job.queue == QUEUE for job in jobs)
        report.leases = len(self.log.leases)
        report.reruns = report.leases - len(jobs)
        report.fires = len(fires)
        report.heartbeats = sum(r.kind == "heartbeat" and r.code == "OK" for r in self.log.reports)
        violations = report.violations
        violations += self.failures
        violations += nothing_lost(self.acknowledged, by_id)
        violations += one_success_each(self.log, jobs)
        violations += double_leases(self.log)
        violations += fires_once(
            first_fire,
            covered_until,
            MICROS,
            # Fires after the end of the run, before the pause, are judged too.
            fires,
            [job.job_id for job in jobs if job.queue == CRON_QUEUE],
        )
        unexpected = [job for job in jobs if job.queue not in (QUEUE, CRON_QUEUE)]
        if unexpected:
            violations.append(f"{len(unexpected)} jobs in queues nobody enqueued to")
        if any(job.state not in FINISHED for job in jobs):
            violations.append("jobs left unfinished")


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


async def run_chaos(
    config: ChaosConfig, db_url: str, say: Callable[[str], None] = lambda _: None
) -> ChaosReport:
    """One chaos run over the (fresh, empty) PostgreSQL database at `db_url`."""
    return await ChaosRun(config, db_url, say).run()
