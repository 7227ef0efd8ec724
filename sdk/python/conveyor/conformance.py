"""`conveyor conformance`: checks that a worker program (in any language) keeps the worker
protocol, by running it against a coordinator of the kit's own through a set of scenarios.

The worker program's contract is in docs/conformance.md. The kit starts the coordinator as a
subprocess (`python -m conveyor_server serve`), so the SDK never imports the server; each
scenario gets a fresh queue and a fresh worker process, started with the shell command given,
in a process group of its own (signals reach the worker even behind a wrapper script)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import grpc

from conveyor._conformance_tap import LeaseCall, WireTap
from conveyor.client import Client
from conveyor.errors import ConveyorError, DeadlineExceeded, NotFound, Unavailable
from conveyor.models import Job, JobSpec, JobState, Outcome, RetryPolicy

ADDRESS_ENV = "CONVEYOR_ADDRESS"
QUEUE_ENV = "CONVEYOR_QUEUE"
GRACE_ENV = "CONVEYOR_SHUTDOWN_GRACE_MS"
CONCURRENCY_ENV = "CONVEYOR_CONCURRENCY"
# The kit's coordinator takes payloads, results and checkpoints up to this size (its default).
PAYLOAD_LIMIT = 256 * 1024
# Retries come quickly, so that scenarios with a second attempt take well under a second more.
FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=100), jitter=0.0)
# How often job state is polled while waiting for it to change.
_POLL = 0.05
# How long the coordinator may take to answer its first call.
_COORDINATOR_START_TIMEOUT = 20.0
# How long a worker may take to exit after SIGTERM before the kit SIGKILLs it.
_WORKER_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 20
# How long in-flight calls may run when the kit stops its coordinator (a restart scenario).
_COORDINATOR_SHUTDOWN_GRACE = 1.0
# The idle scenario watches an idle worker this long and allows this many Lease calls: a
# long-polling worker makes one call per wait (20 s in the SDKs); 10 in 5 s is 2 a second.
IDLE_WINDOW = 5.0
IDLE_MAX_LEASE_CALLS = 10


class ScenarioFailed(Exception):
    """A scenario's expectation did not hold; the message says which and what was seen."""


# -- processes --------------------------------------------------------------------------------


class WorkerProcess:
    """One run of the worker command, its output in a log file."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path, log: IO[bytes]):
        self._process = process
        self.log_path = log_path
        self._log = log

    @classmethod
    async def start(cls, command: str, env: dict[str, str], log_path: Path) -> WorkerProcess:
        log = log_path.open("ab")
        process = await asyncio.create_subprocess_shell(
            _exec_form(command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            # A group of its own: SIGTERM and SIGKILL go to the worker, not only to the shell.
            start_new_session=True,
        )
        return cls(process, log_path, log)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def signal(self, sig: signal.Signals) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout`."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._process.wait(), timeout)
        return None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; always closes the log."""
        try:
            self.signal(signal.SIGTERM)
            if await self.wait(_WORKER_STOP_TIMEOUT) is None:
                self.signal(signal.SIGKILL)
                await self._process.wait()
        finally:
            self._log.close()

    def tail(self) -> list[str]:
        lines = _read_log(self.log_path).splitlines()
        return lines[-_LOG_TAIL_LINES:]


# Characters that make a command more than one simple command (a list, a pipe, a subshell...).
_SHELL_OPERATORS = frozenset(";&|()<>`\n")


def _exec_form(command: str) -> str:
    """`exec COMMAND` for a simple command, so that the worker replaces the shell: the shell
    would otherwise die of the kit's SIGTERM itself (exit 143) instead of reporting the
    worker's exit code. A compound command runs as it is; see docs/conformance.md."""
    if _SHELL_OPERATORS.isdisjoint(command):
        return f"exec {command}"
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CoordinatorProcess:
    """The kit's coordinator: a subprocess on a fixed loopback port over a SQLite file, which
    a scenario may stop and start again on the same port and database."""

    def __init__(self, workdir: Path) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self._db = f"sqlite:///{workdir / 'conformance.db'}"
        self._log_path = workdir / "coordinator.log"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "conveyor_server",
                "serve",
                "--db",
                self._db,
                "--listen",
                self.address,
                "--sqlite-synchronous",
                "NORMAL",  # nothing here needs to survive a power cut
                "--max-payload-bytes",
                str(PAYLOAD_LIMIT),
                "--shutdown-grace",
                str(_COORDINATOR_SHUTDOWN_GRACE),
                "--log-level",
                "warning",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await _wait_until_serving(self.address, self._process, self._log_path)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def coordinator(workdir: Path) -> AsyncIterator[CoordinatorProcess]:
    """A coordinator of the kit's own on a free loopback port."""
    process = CoordinatorProcess(workdir)
    try:
        await process.start()
        yield process
    finally:
        await process.stop()


def _read_log(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_until_serving(
    address: str, process: asyncio.subprocess.Process, log_path: Path
) -> None:
    deadline = time.monotonic() + _COORDINATOR_START_TIMEOUT
    async with Client(address, timeout=1.0) as client:
        while True:
            if process.returncode is not None:
                output = _read_log(log_path).strip()
                raise RuntimeError(
                    f"the coordinator exited with code {process.returncode} before serving "
                    f"(is the conveyor server installed?):\n{output}"
                )
            try:
                await client.get_queue("conformance-probe")
                return
            except NotFound:
                return  # an answer all the same: it is serving
            except (Unavailable, DeadlineExceeded):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the coordinator did not answer on {address}") from None
                await asyncio.sleep(0.1)


# -- what scenarios work with -----------------------------------------------------------------


@dataclass
class Kit:
    """What a scenario gets: a client, its own queue, a way to start the worker, the wire tap
    the worker's calls go through, and the coordinator behind it."""

    client: Client
    tap: WireTap
    coordinator: CoordinatorProcess
    queue: str
    worker_command: str
    workdir: Path
    timeout: float
    workers: list[WorkerProcess] = field(default_factory=list)

    async def start_worker(self, **extra_env: str) -> WorkerProcess:
        env = dict(os.environ)
        env.update({ADDRESS_ENV: self.tap.address, QUEUE_ENV: self.queue, **extra_env})
        log_path = self.workdir / f"worker-{self.queue}.log"
        worker = await WorkerProcess.start(self.worker_command, env, log_path)
        self.workers.append(worker)
        return worker

    async def wait_for(
        self, job_id: str, done: Callable[[Job], bool], what: str, worker: WorkerProcess | None
    ) -> Job:
        """The job once `done(job)`; fails when the timeout passes or the worker exits."""
        deadline = time.monotonic() + self.timeout
        while True:
            job = await self.client.get_job(job_id)
            if done(job):
                return job
            if worker is not None and worker.returncode is not None:
                raise ScenarioFailed(
                    f"the worker exited with code {worker.returncode} while the job was "
                    f"{job.state.name} (waiting for {what})"
                )
            if time.monotonic() > deadline:
                raise ScenarioFailed(
                    f"job still {job.state.name} after {self.timeout:g}s (waiting for {what})"
                )
            await asyncio.sleep(_POLL)

    async def wait_tap(self, ready: Callable[[], Any], what: str, worker: WorkerProcess) -> Any:
        """What `ready()` returns once it is truthy (it looks at the tap's records); fails
        when the timeout passes or the worker exits."""
        deadline = time.monotonic() + self.timeout
        while not (value := await self.tap.until(ready, _POLL)):
            if worker.returncode is not None:
                raise ScenarioFailed(f"the worker exited with code {worker.returncode} ({what})")
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"{what} did not happen within {self.timeout:g}s")
        return value

    async def enqueue_many(self, specs: list[JobSpec]) -> list[str]:
        return [result.job_id for result in await self.client.enqueue_batch(specs)]

    async def wait_terminal(self, job_id: str, worker: WorkerProcess | None) -> Job:
        return await self.wait_for(job_id, lambda j: j.state.is_terminal, "it to end", worker)

    async def wait_leased(self, job_id: str, worker: WorkerProcess | None) -> Job:
        return await self.wait_for(
            job_id, lambda j: j.state == JobState.LEASED, "a worker to lease it", worker
        )

    async def wait_running(self, job_id: str, worker: WorkerProcess) -> Job:
        """The job once leased and, when the worker leases with confirmation (Lease.confirm),
        confirmed by a heartbeat: only then does a worker run it, and only then does a lost
        lease cost an attempt (an unconfirmed one is handed back unspent)."""
        job = await self.wait_leased(job_id, worker)
        if any(call.request.confirm for call in self.tap.leases):

            def confirmed() -> list[Any]:
                return [
                    b
                    for b in self.tap.heartbeats
                    if b.job_id == job_id and b.code == grpc.StatusCode.OK
                ]

            await self.wait_tap(confirmed, "the worker to confirm its lease", worker)
        return job


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioFailed(message)


def _describe(job: Job) -> str:
    error = ""
    if job.last_error is not None:
        error = f", last error {job.last_error.type}: {job.last_error.message}"
    return f"{job.state.name} after {job.attempt} attempt(s){error}"


def expect_state(job: Job, state: JobState) -> None:
    expect(job.state == state, f"expected {state.name}, got {_describe(job)}")


# -- scenarios --------------------------------------------------------------------------------

Scenario = Callable[[Kit], Awaitable[str]]


async def success(kit: Kit) -> str:
    payload = b"conformance \x00\xff bytes"
    worker = await kit.start_worker()
    job_id = (await kit.client.enqueue(kit.queue, "conformance.echo", payload)).job_id
    job = await kit.wait_terminal(job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.result == payload, f"echo returned {job.result!r}, not the payload {payload!r}")
    return "echo returned the payload"


async def retryable_failure(kit: Kit) -> str:
    worker = await kit.start_worker()
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.fail_once", max_attempts=3, retry_policy=FAST_RETRY
    )
    job = await kit.wait_terminal(enqueued.job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.attempt == 2, f"succeeded on attempt {job.attempt}, expected 2")
    expect(job.result == b"ok", f"attempt 2 returned {job.result!r}, expected b'ok'")
    first = job.attempts[0]
    expect(first.outcome == Outcome.FAILURE, f"attempt 1 ended {first.outcome.name}")
    expect(
        first.error is not None and not first.error.non_retryable,
        "attempt 1 should fail retryably",
    )
    return "failed once, succeeded on attempt 2"


async def non_retryable_failure(kit: Kit) -> str:
    worker = await kit.start_worker()
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.fail_permanently", max_attempts=5, retry_policy=FAST_RETRY
    )
    job = await kit.wait_terminal(enqueued.job_id, worker)
    expect_state(job, JobState.FAILED)
    expect(job.attempt == 1, f"{job.attempt} attempts ran; a non-retryable failure allows 1")
    expect(
        job.last_error is not None and job.last_error.non_retryable,
        "the error was not reported as non-retryable",
    )
    return "FAILED after 1 of 5 attempts"


async def timeout_and_re_lease(kit: Kit) -> str:
    worker = await kit.start_worker()
    enqueued = await kit.client.enqueue(
        kit.queue,
        "conformance.sleep",
        b"1500",
        lease_duration=2,
        max_attempts=3,
        retry_policy=FAST_RETRY,
    )
    await kit.wait_running(enqueued.job_id, worker)
    # Mid-job, with no chance to report: the lease must run out and the job come back.
    worker.signal(signal.SIGKILL)
    await worker.wait(_WORKER_STOP_TIMEOUT)
    restarted = await kit.start_worker()
    job = await kit.wait_terminal(enqueued.job_id, restarted)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.attempt == 2, f"succeeded on attempt {job.attempt}, expected 2")
    first = job.attempts[0]
    expect(
        first.outcome == Outcome.UNSPECIFIED,
        f"attempt 1 ended {first.outcome.name}, expected its lease to expire",
    )
    return "killed on attempt 1, lease expired, attempt 2 succeeded"


async def heartbeat(kit: Kit) -> str:
    worker = await kit.start_worker()
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.sleep", b"3000", lease_duration=1, max_attempts=1
    )
    job = await kit.wait_terminal(enqueued.job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.attempt == 1, f"took {job.attempt} attempts: a lease ran out")
    expect(job.result == b"done", f"returned {job.result!r}, expected b'done'")
    return "a 1 s lease lived 3 s on heartbeats"


async def checkpoint(kit: Kit) -> str:
    worker = await kit.start_worker()
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.checkpoint", max_attempts=3, retry_policy=FAST_RETRY
    )
    job = await kit.wait_terminal(enqueued.job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.attempt == 2, f"succeeded on attempt {job.attempt}, expected 2")
    expect(
        job.result == b"step-1",
        f"attempt 2 returned {job.result!r}: the checkpoint b'step-1' did not reach it",
    )
    return "attempt 2 got attempt 1's checkpoint"


async def cancellation(kit: Kit) -> str:
    worker = await kit.start_worker()
    # A short lease: heartbeats, which bring the cancellation, come every half second.
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.wait_for_cancel", lease_duration=1.5, max_attempts=1
    )
    await kit.wait_running(enqueued.job_id, worker)
    await kit.client.cancel_job(enqueued.job_id)
    job = await kit.wait_terminal(enqueued.job_id, worker)
    expect_state(job, JobState.CANCELLED)
    return "cancelled while running, ended CANCELLED"


async def graceful_shutdown(kit: Kit) -> str:
    worker = await kit.start_worker(**{GRACE_ENV: "500"})
    enqueued = await kit.client.enqueue(
        kit.queue, "conformance.sleep", b"60000", lease_duration=10, max_attempts=3
    )
    await kit.wait_leased(enqueued.job_id, worker)
    worker.signal(signal.SIGTERM)
    code = await worker.wait(_WORKER_STOP_TIMEOUT)
    expect(code is not None, f"the worker was still running {_WORKER_STOP_TIMEOUT:g}s after TERM")
    expect(code == 0, f"the worker exited with code {code} after SIGTERM, expected 0")
    await kit.tap.settled()  # a reply the worker gave up on is handed back by the tap
    job = await kit.client.get_job(enqueued.job_id)
    expect_state(job, JobState.AVAILABLE)
    expect(job.attempt == 0, f"the released attempt was counted (attempt {job.attempt})")
    return "SIGTERM: job released uncounted, exit 0"


async def version_routing(kit: Kit) -> str:
    worker = await kit.start_worker()
    compatible = await kit.client.enqueue(
        kit.queue, "conformance.versioned", b"v1.0.0 job", task_version="1.0.0"
    )
    job = await kit.wait_terminal(compatible.job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.result == b"v1.0.0 job", f"returned {job.result!r}, not the payload")
    # The worker implements 1.1.0: a 2.0.0 job must wait for a worker with major version 2.
    newer = await kit.client.enqueue(
        kit.queue, "conformance.versioned", b"v2.0.0 job", task_version="2.0.0"
    )
    await asyncio.sleep(1.5)  # time enough for a wrong lease to happen
    job = await kit.client.get_job(newer.job_id)
    expect(
        job.state == JobState.AVAILABLE and job.attempt == 0,
        f"the 2.0.0 job should stay AVAILABLE, unattempted; it is {_describe(job)}",
    )
    stats = (await kit.client.get_queue(kit.queue)).stats
    expect(
        stats.awaiting_compatible_worker == 1,
        f"awaiting_compatible_worker is {stats.awaiting_compatible_worker}, expected 1",
    )
    return "1.0.0 ran on 1.1.0; 2.0.0 awaits a compatible worker"


def _lease_pending(kit: Kit) -> LeaseCall | None:
    """A long-poll of the worker's in flight now, if any."""
    return next((c for c in kit.tap.leases if c.replied_at is None and c.code is None), None)


async def idle_long_poll(kit: Kit) -> str:
    worker = await kit.start_worker()
    first: LeaseCall = await kit.wait_tap(lambda: kit.tap.leases[:1], "a first Lease", worker)
    first = kit.tap.leases[0]
    await asyncio.sleep(IDLE_WINDOW)  # the window measured: nothing to await but time
    expect(worker.returncode is None, f"the worker exited with code {worker.returncode}")
    end = first.received_at + IDLE_WINDOW
    during = [c for c in kit.tap.leases[1:] if c.received_at <= end]
    expect(
        len(during) <= IDLE_MAX_LEASE_CALLS,
        f"{len(during)} Lease calls in {IDLE_WINDOW:g}s with no work (at most "
        f"{IDLE_MAX_LEASE_CALLS}): long-poll with Lease.wait instead of polling",
    )
    short = [c for c in kit.tap.leases if c.wait_seconds <= 0]
    expect(
        not short,
        f"{len(short)} of {len(kit.tap.leases)} Lease calls had no wait: set Lease.wait "
        "(up to 30 s) so that an idle worker long-polls",
    )
    waits = sorted({round(c.wait_seconds, 3) for c in kit.tap.leases})
    return f"{len(during)} Lease call(s) in {IDLE_WINDOW:g}s idle, wait {waits} s"


CONCURRENCY = 3
_CONCURRENT_JOBS = 5
_CONCURRENT_SLEEP = 2.0


def _provably_held(kit: Kit, at: float, sleep: float) -> int:
    """Jobs the worker must still be running at `at`: handed to it less than `sleep` (their
    sleep) ago, and not reported yet."""
    reported = {r.lease_token: r.at for r in reversed(kit.tap.receipts)}
    held = 0
    for call in kit.tap.leases:
        if call.replied_at is None or call.replied_at > at or call.replied_at + sleep <= at:
            continue
        held += sum(1 for j in call.jobs if reported.get(j.lease_token, at + 1) > at)
    return held


def _peak_held(kit: Kit) -> int:
    """The most jobs handed to the worker and not yet reported at any moment."""
    events = [(c.replied_at, 1) for c in kit.tap.leases if c.replied_at for _ in c.jobs]
    first_report: dict[str, float] = {}
    for report in kit.tap.receipts:
        first_report.setdefault(report.lease_token, report.at)
    events += [(at, -1) for at in first_report.values()]
    peak = held = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        held += change
        peak = max(peak, held)
    return peak


async def concurrency(kit: Kit) -> str:
    worker = await kit.start_worker(**{CONCURRENCY_ENV: str(CONCURRENCY)})
    await kit.wait_tap(lambda: _lease_pending(kit), "a long-poll from the worker", worker)
    sleep_ms = str(int(_CONCURRENT_SLEEP * 1000)).encode()
    spec = JobSpec(kit.queue, "conformance.sleep", sleep_ms, lease_duration=10, max_attempts=1)
    job_ids = await kit.enqueue_many([spec] * _CONCURRENT_JOBS)
    for job_id in job_ids:
        expect_state(await kit.wait_terminal(job_id, worker), JobState.SUCCEEDED)
    for call in kit.tap.leases:
        asked = max(call.request.max_jobs, 1)  # 0 means the default, 1
        held = _provably_held(kit, call.received_at, _CONCURRENT_SLEEP)
        expect(
            asked <= CONCURRENCY - held,
            f"a Lease asked for {asked} job(s) while {held} of the worker's {CONCURRENCY} "
            "slots were busy: ask for free slots only (and lease nothing when none is free)",
        )
    peak = _peak_held(kit)
    expect(
        peak >= CONCURRENCY,
        f"the worker held at most {peak} job(s) at once with {CONCURRENCY_ENV}={CONCURRENCY}",
    )
    handed = {j.lease_token: c.replied_at for c in kit.tap.leases if c.replied_at for j in c.jobs}
    for report in kit.tap.receipts:
        took = report.at - handed.get(report.lease_token, report.at)
        expect(
            took < 2 * _CONCURRENT_SLEEP,
            f"a {_CONCURRENT_SLEEP:g}s job took {took:.1f}s from its lease to its receipt: "
            "the worker did not run the jobs it held at once",
        )
    return f"{CONCURRENCY} of {_CONCURRENT_JOBS} jobs at once; no Lease beyond free slots"


async def fencing(kit: Kit) -> str:
    worker = await kit.start_worker(**{CONCURRENCY_ENV: "1"})
    lost = (
        await kit.client.enqueue(
            kit.queue, "conformance.sleep", b"60000", lease_duration=1.5, max_attempts=1
        )
    ).job_id
    await kit.wait_running(lost, worker)
    kit.tap.fence(lost)

    def fenced_beat() -> list[Any]:
        return [b for b in kit.tap.heartbeats if b.job_id == lost and kit.tap.fenced(b.lease_token)]

    token = (await kit.wait_tap(fenced_beat, "a heartbeat for the job", worker))[0].lease_token
    # With one slot, the next job runs only once the worker has dropped the lost one.
    echo = await kit.client.enqueue(kit.queue, "conformance.echo", b"next", max_attempts=1)
    job = await kit.wait_for(
        echo.job_id,
        lambda j: j.state.is_terminal,
        "the worker to drop the job whose heartbeat got FAILED_PRECONDITION and take the next",
        worker,
    )
    expect_state(job, JobState.SUCCEEDED)
    worker.signal(signal.SIGTERM)
    await worker.wait(_WORKER_STOP_TIMEOUT)
    sent = [r for r in kit.tap.receipts if r.lease_token == token]
    expect(
        not sent,
        f"the worker reported the job after FAILED_PRECONDITION on its heartbeat ({len(sent)} "
        "receipt(s)): a lost lease must not be reported",
    )
    return "dropped the job on FAILED_PRECONDITION, no receipt, took the next job"


async def receipt_across_restart(kit: Kit) -> str:
    # The job outlives the coordinator's stop (SIGTERM, at most a 1 s grace), so its receipt
    # meets a coordinator that is down, and must be retried until it is back.
    worker = await kit.start_worker()
    job_id = (
        await kit.client.enqueue(
            kit.queue, "conformance.sleep", b"1500", lease_duration=30, max_attempts=1
        )
    ).job_id
    await kit.wait_running(job_id, worker)
    await kit.coordinator.stop()

    def refused() -> list[Any]:
        return [r for r in kit.tap.receipts if r.job_id == job_id and r.code != grpc.StatusCode.OK]

    try:
        await kit.wait_tap(refused, "a receipt while the coordinator was down", worker)
    finally:
        await kit.coordinator.start()
        await kit.tap.reconnect()
    job = await kit.wait_terminal(job_id, worker)
    expect_state(job, JobState.SUCCEEDED)
    expect(job.attempt == 1, f"succeeded on attempt {job.attempt}, expected 1")
    tries = len([r for r in kit.tap.receipts if r.job_id == job_id])
    return f"receipt refused while down, landed after the restart ({tries} tries)"


async def sigterm_during_long_poll(kit: Kit) -> str:
    worker = await kit.start_worker(**{GRACE_ENV: "500"})
    await kit.wait_tap(lambda: _lease_pending(kit), "a long-poll from the worker", worker)
    echo = JobSpec(kit.queue, "conformance.echo", b"x", lease_duration=30, max_attempts=1)
    long = JobSpec(kit.queue, "conformance.sleep", b"60000", lease_duration=30, max_attempts=1)
    job_ids = await kit.enqueue_many([echo, long] * 4)
    # SIGTERM the moment the long-poll's reply passes the tap on its way to the worker.
    await kit.wait_tap(lambda: any(c.jobs for c in kit.tap.leases), "a Lease reply", worker)
    worker.signal(signal.SIGTERM)
    code = await worker.wait(_WORKER_STOP_TIMEOUT)
    expect(code == 0, f"the worker exited with code {code} after SIGTERM, expected 0")
    await kit.tap.settled()
    states: dict[str, int] = {}
    for job_id in job_ids:
        job = await kit.client.get_job(job_id)
        states[job.state.name] = states.get(job.state.name, 0) + 1
        expect(
            job.state == JobState.SUCCEEDED
            or (job.state == JobState.AVAILABLE and not job.attempt),
            f"a job is {_describe(job)} after the worker exited: every job must have "
            "succeeded or be AVAILABLE again, unattempted (released)",
        )
    back = f", {len(kit.tap.handed_back)} handed back by the kit" if kit.tap.handed_back else ""
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"exit 0; {summary}{back}"


async def payload_limit(kit: Kit) -> str:
    worker = await kit.start_worker()
    payloads = [os.urandom(PAYLOAD_LIMIT) for _ in range(3)]
    job_ids = await kit.enqueue_many(
        [JobSpec(kit.queue, "conformance.echo", p, max_attempts=1) for p in payloads]
    )
    for job_id, payload in zip(job_ids, payloads, strict=True):
        job = await kit.wait_terminal(job_id, worker)
        expect_state(job, JobState.SUCCEEDED)
        expect(job.result == payload, f"echo returned {len(job.result)} bytes, not the payload")
    return f"3 payloads of {PAYLOAD_LIMIT} bytes (the limit) echoed"


SCENARIOS: dict[str, Scenario] = {
    "success": success,
    "retryable-failure": retryable_failure,
    "non-retryable-failure": non_retryable_failure,
    "timeout-and-re-lease": timeout_and_re_lease,
    "heartbeat": heartbeat,
    "checkpoint": checkpoint,
    "cancellation": cancellation,
    "graceful-shutdown": graceful_shutdown,
    "version-routing": version_routing,
    "idle-long-poll": idle_long_poll,
    "concurrency": concurrency,
    "fencing": fencing,
    "receipt-across-restart": receipt_across_restart,
    "sigterm-during-long-poll": sigterm_during_long_poll,
    "payload-limit": payload_limit,
}


# -- running them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    passed: bool
    seconds: float
    detail: str
    worker_output: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Bench:
    """What every scenario shares: the coordinator, the tap in front of it, a client."""

    coordinator: CoordinatorProcess
    tap: WireTap
    client: Client


async def run_scenario(
    name: str, bench: Bench, worker_command: str, workdir: Path, timeout: float
) -> ScenarioResult:
    queue = f"conformance-{name}-{secrets.token_hex(3)}"
    bench.tap.reset()
    kit = Kit(bench.client, bench.tap, bench.coordinator, queue, worker_command, workdir, timeout)
    started = time.monotonic()
    passed, output = False, []
    try:
        detail = await SCENARIOS[name](kit)
        passed = True
    except ScenarioFailed as failure:
        detail = str(failure)
    except ConveyorError as error:
        detail = f"the coordinator refused a call: {error}"
    finally:
        for worker in kit.workers:
            await worker.stop()
    if not passed:
        output = [line for worker in kit.workers for line in worker.tail()]
    return ScenarioResult(name, passed, time.monotonic() - started, detail, output)


def _print_result(result: ScenarioResult) -> None:
    verdict = "pass" if result.passed else "FAIL"
    print(f"{result.name:<24} {verdict:<6} {result.seconds:5.1f}s  {result.detail}", flush=True)


async def run(worker_command: str, names: list[str], timeout: float) -> int:
    """Runs the scenarios one after another, printing a line each; 0 only if all pass."""
    with tempfile.TemporaryDirectory(prefix="conveyor-conformance-") as tmp:
        workdir = Path(tmp)
        async with coordinator(workdir) as process, Client(process.address) as client:
            tap = WireTap(process.address)
            await tap.start()
            bench = Bench(process, tap, client)
            print(f"coordinator {process.address} behind {tap.address}", flush=True)
            print(f"worker: {worker_command}", flush=True)
            print(f"{'SCENARIO':<24} {'RESULT':<6} {'TIME':>6}  DETAIL", flush=True)
            results = []
            try:
                for name in names:
                    result = await run_scenario(name, bench, worker_command, workdir, timeout)
                    _print_result(result)
                    results.append(result)
            finally:
                await tap.close()
        for result in results:
            if result.worker_output:
                print(f"\n--- worker output, {result.name} (last lines) ---", flush=True)
                print("\n".join(result.worker_output), flush=True)
    passed = sum(r.passed for r in results)
    print(f"\n{passed}/{len(results)} scenarios passed", flush=True)
    return 0 if passed == len(results) else 1
