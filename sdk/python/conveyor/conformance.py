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
from typing import IO

from conveyor.client import Client
from conveyor.errors import ConveyorError, DeadlineExceeded, NotFound, Unavailable
from conveyor.models import Job, JobState, Outcome, RetryPolicy

ADDRESS_ENV = "CONVEYOR_ADDRESS"
QUEUE_ENV = "CONVEYOR_QUEUE"
GRACE_ENV = "CONVEYOR_SHUTDOWN_GRACE_MS"
# Retries come quickly, so that scenarios with a second attempt take well under a second more.
FAST_RETRY = RetryPolicy(initial_backoff=timedelta(milliseconds=100), jitter=0.0)
# How often job state is polled while waiting for it to change.
_POLL = 0.05
# How long the coordinator may take to answer its first call.
_COORDINATOR_START_TIMEOUT = 20.0
# How long a worker may take to exit after SIGTERM before the kit SIGKILLs it.
_WORKER_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 20


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


@contextlib.asynccontextmanager
async def coordinator(workdir: Path) -> AsyncIterator[str]:
    """A coordinator of the kit's own on a free loopback port; yields its address."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log_path = workdir / "coordinator.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor_server",
            "serve",
            "--db",
            f"sqlite:///{workdir / 'conformance.db'}",
            "--listen",
            address,
            "--sqlite-synchronous",
            "NORMAL",  # nothing here needs to survive a power cut
            "--log-level",
            "warning",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _wait_until_serving(address, process, log_path)
            yield address
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


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
    """What a scenario gets: a client, its own queue, and a way to start the worker."""

    client: Client
    address: str
    queue: str
    worker_command: str
    workdir: Path
    timeout: float
    workers: list[WorkerProcess] = field(default_factory=list)

    async def start_worker(self, **extra_env: str) -> WorkerProcess:
        env = dict(os.environ)
        env.update({ADDRESS_ENV: self.address, QUEUE_ENV: self.queue, **extra_env})
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

    async def wait_terminal(self, job_id: str, worker: WorkerProcess | None) -> Job:
        return await self.wait_for(job_id, lambda j: j.state.is_terminal, "it to end", worker)

    async def wait_leased(self, job_id: str, worker: WorkerProcess | None) -> Job:
        return await self.wait_for(
            job_id, lambda j: j.state == JobState.LEASED, "a worker to lease it", worker
        )


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
    await kit.wait_leased(enqueued.job_id, worker)
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
    await kit.wait_leased(enqueued.job_id, worker)
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
}


# -- running them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    passed: bool
    seconds: float
    detail: str
    worker_output: list[str] = field(default_factory=list)


async def run_scenario(
    name: str, client: Client, address: str, worker_command: str, workdir: Path, timeout: float
) -> ScenarioResult:
    queue = f"conformance-{name}-{secrets.token_hex(3)}"
    kit = Kit(client, address, queue, worker_command, workdir, timeout)
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
    print(f"{result.name:<22} {verdict:<6} {result.seconds:5.1f}s  {result.detail}", flush=True)


async def run(worker_command: str, names: list[str], timeout: float) -> int:
    """Runs the scenarios one after another, printing a line each; 0 only if all pass."""
    with tempfile.TemporaryDirectory(prefix="conveyor-conformance-") as tmp:
        workdir = Path(tmp)
        async with coordinator(workdir) as address, Client(address) as client:
            print(f"coordinator {address}; worker: {worker_command}", flush=True)
            print(f"{'SCENARIO':<22} {'RESULT':<6} {'TIME':>6}  DETAIL", flush=True)
            results = []
            for name in names:
                result = await run_scenario(name, client, address, worker_command, workdir, timeout)
                _print_result(result)
                results.append(result)
        for result in results:
            if result.worker_output:
                print(f"\n--- worker output, {result.name} (last lines) ---", flush=True)
                print("\n".join(result.worker_output), flush=True)
    passed = sum(r.passed for r in results)
    print(f"\n{passed}/{len(results)} scenarios passed", flush=True)
    return 0 if passed == len(results) else 1
