"""Issue 9, item 4: a model-based test of the job lifecycle against a real coordinator.

Hypothesis drives a RuleBasedStateMachine over raw gRPC (never the SDK): enqueue, lease (with
and without lease confirmation: `confirm`, short `confirm_within` windows), heartbeat (which
confirms an unconfirmed lease), receipts alone and in a ReceiptBatch (success, retryable and
non-retryable failure, release; with the current token, stale tokens and exact repeats),
cancel, retry, clock advances, the reaper and the waker (their `run_once`, called directly at
the fake clock's now), and a coordinator crash followed by a restart on the same database. A
plain-Python model predicts every reply and every job's row; after each step the whole queue
is read back (ListJobs, and GetJob for the jobs the step acted on, with their attempt
history) and must equal the model, and each job's state change must be one drawn in
docs/state-machine.md, by the transition the step makes. An unconfirmed lease whose window
passes is handed back by the reaper: AVAILABLE, attempt not spent (CANCELLED if cancel was
requested). After each step the maintained per-queue counts (queue_counts) must equal a real
COUNT(*) of the jobs, both read from the store, and GetQueue's per-state stats the model's.

Deterministic: time is a FakeClock, the background services are never started (the steps run
them) so that nothing moves between steps, the retry policy has no jitter, and Hypothesis is
derandomized with no example database. One coordinator database serves every example; each
example has its own queue.

The database comes from conftest's `server_config` fixture: when that fixture is parametrised
over database URLs (SQLite, PostgreSQL), this test runs once per URL with no change here."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import grpc
import pytest
import sqlalchemy as sa
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.maintenance.base import BackgroundService, RunResult
from conveyor_server.maintenance.pusher import Pusher
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Connection

T = TypeVar("T")

S = 1_000_000  # microseconds per second: the FakeClock's unit
# A lease shorter than a backoff makes an expired job wait out the rest of its backoff,
# counted from the start of the lost lease; a longer one makes it available at once.
LEASE_SECONDS = (1, 10)
# Lease confirmation: None leases without `confirm`; 0 sets `confirm` alone (the 10 s default
# window); otherwise `confirm_within` in seconds. A window longer than the job's lease is cut
# to it.
CONFIRM_SECONDS = (None, 0, 1, 2)
DEFAULT_CONFIRM_SECONDS = 10
INITIAL_BACKOFF_SECONDS = 3
MULTIPLIER = 2.0
MAX_BACKOFF_SECONDS = 3600
MAX_CRASHES = 2  # per sequence
# Per sequence: more jobs would spread the same steps thinner over each job's lifecycle.
MAX_JOBS = 5
TASK = "task"
WORKER = "model-worker"
CALL_TIMEOUT = 30.0  # seconds; a call that hangs this long is a failure, not a slow pass
# About 200 sequences of up to 30 steps: a minute or so on a 2-core machine.
SETTINGS = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# GetQueue's per-state stats, and the two counts that must agree: the maintained one and a
# real COUNT(*) over the jobs.
STATS_FIELDS = {
    pb.JOB_STATE_SCHEDULED: "scheduled",
    pb.JOB_STATE_AVAILABLE: "available",
    pb.JOB_STATE_LEASED: "leased",
    pb.JOB_STATE_SUCCEEDED: "succeeded",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}
COUNTS = (
    sa.text("SELECT task_type, state, n FROM queue_counts WHERE queue = :queue"),
    sa.text(
        "SELECT task_type, state, COUNT(*) AS n FROM jobs WHERE queue = :queue "
        "GROUP BY task_type, state"
    ),
)

RECEIPTS = ["success", "success-result", "failure", "failure-final", "release"]
SCHEDULED = pb.JOB_STATE_SCHEDULED
AVAILABLE = pb.JOB_STATE_AVAILABLE
LEASED = pb.JOB_STATE_LEASED
SUCCEEDED = pb.JOB_STATE_SUCCEEDED
FAILED = pb.JOB_STATE_FAILED
CANCELLED = pb.JOB_STATE_CANCELLED
PENDING = (SCHEDULED, AVAILABLE)
OK = grpc.StatusCode.OK
REFUSED = grpc.StatusCode.FAILED_PRECONDITION
NEW = 0  # "no state yet": the left end of the enqueue arrow

# The transitions of docs/state-machine.md, by the rows of its table. A step may change a
# job's state only along an arrow of the transition it makes.
TRANSITIONS: dict[str, frozenset[tuple[int, int]]] = {
    "enqueue": frozenset({(NEW, AVAILABLE), (NEW, SCHEDULED)}),
    "promote_due": frozenset({(SCHEDULED, AVAILABLE)}),
    "lease": frozenset({(AVAILABLE, LEASED)}),
    "heartbeat": frozenset(),  # LEASED -> LEASED
    "settle SUCCESS": frozenset({(LEASED, SUCCEEDED)}),
    "settle FAILURE": frozenset({(LEASED, SCHEDULED), (LEASED, AVAILABLE), (LEASED, FAILED)}),
    "settle RELEASE": frozenset({(LEASED, AVAILABLE), (LEASED, SCHEDULED)}),
    "rescue_expired": frozenset({(LEASED, SCHEDULED), (LEASED, AVAILABLE), (LEASED, FAILED)}),
    # A lease taken with `confirm` whose window passed unconfirmed: handed back, never FAILED.
    "rescue_expired (unconfirmed)": frozenset({(LEASED, AVAILABLE)}),
    "cancel": frozenset({(SCHEDULED, CANCELLED), (AVAILABLE, CANCELLED)}),
    # A leased job CancelJob asked to cancel: its receipt (but SUCCESS) or expiry ends it.
    "cancel (LEASED)": frozenset({(LEASED, CANCELLED)}),
    "retry": frozenset({(FAILED, AVAILABLE), (CANCELLED, AVAILABLE)}),
}
# A step that is no arrow at all (a clock advance): nothing may change.
QUIET: frozenset[tuple[int, int]] = frozenset()


def _code(number: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == number)


def state_name(state: int) -> str:
    return pb.JobState.Name(state)  # type: ignore[arg-type]


def backoff(failed_attempt: int) -> int:
    """The policy every model job has (no jitter): min(max, initial * multiplier^(n-1))."""
    delay = INITIAL_BACKOFF_SECONDS * MULTIPLIER ** max(failed_attempt - 1, 0)
    return round(min(float(MAX_BACKOFF_SECONDS), delay) * S)


def duration(micros: int) -> Duration:
    value = Duration()
    value.FromMicroseconds(micros)
    return value


@dataclass
class ModelJob:
    """What the model expects of one job's row."""

    job_id: str
    max_attempts: int
    lease_duration: int
    state: int
    run_at: int
    attempt: int = 0
    # The token the row holds: the current lease's, or the one a receipt settled (kept so
    # that a repeat of that receipt is recognised); None after an expiry or a retry.
    token: str | None = field(default=None, repr=False)
    lease_expires_at: int | None = None
    leased_at: int = 0
    # Leased with `confirm` and not yet confirmed by a heartbeat or a receipt.
    unconfirmed: bool = False
    cancel_requested: bool = False
    # Outcome and result of the receipt the kept token settled the job with.
    digest: tuple[int, bytes] | None = None
    history: int = 0  # finished attempts recorded
    # Every token handed out, oldest first (kept out of messages, as tokens are secrets).
    tokens: list[str] = field(default_factory=list, repr=False)
    # The last receipt sent for this job, to repeat exactly.
    last_receipt: pb.ReceiptRequest | None = field(default=None, repr=False)


def some_job_in(*states: int) -> Callable[[JobLifecycle], bool]:
    """A precondition: some job is in one of `states`. A step that could change nothing is
    skipped (the invariant still checks what each step leaves alone)."""
    return lambda machine: any(job.state in states for job in machine.jobs.values())


class Coordinators:
    """One coordinator at a time on one database, on an event loop in a thread so that the
    synchronous state machine can drive it; crash() kills one and starts the next."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # Queue names are new on every run, should the database outlive one (a shared server).
        self.run_id = uuid.uuid4().hex[:8]
        self.clock = FakeClock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.coordinator = self.run(Coordinator.start(self.config, clock=self.clock))
        self._connect()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def _connect(self) -> None:
        self.channel = grpc.insecure_channel(self.coordinator.address)
        self.stub = rpc.CoordinatorServiceStub(self.channel)

    def counts(self, queue: str) -> tuple[Counter[tuple[str, int]], Counter[tuple[str, int]]]:
        """A queue's maintained counts and a real COUNT(*) of its jobs, by (task type, state),
        in one read."""
        store = self.coordinator._store

        def read(conn: Connection) -> tuple[Counter[tuple[str, int]], ...]:
            return tuple(
                Counter({(row.task_type, int(row.state)): int(row.n) for row in rows if row.n})
                for rows in (conn.execute(query, {"queue": queue}).all() for query in COUNTS)
            )

        kept, real = self.run(store._read(read))
        return kept, real

    def reap(self) -> None:
        self._until_done(self.coordinator.reaper.run_once)

    def wake(self) -> None:
        self._until_done(self.coordinator.waker.run_once)

    def _until_done(self, run_once: Callable[[int], Coroutine[Any, Any, RunResult]]) -> None:
        while self.run(run_once(self.clock.now())).more:
            pass

    def crash(self) -> None:
        """Kills the coordinator the way a SIGKILL would: in-flight calls end at once, nothing
        is drained or closed in order, and the SQLite file lock goes (the kernel drops a dead
        process's flock). Then a new coordinator starts on the same database and does what
        its background services do first at start: one reaper and one waker run."""
        dead = self.coordinator
        self.channel.close()
        try:
            self.run(_kill(dead))
            self.coordinator = self.run(Coordinator.start(self.config, clock=self.clock))
        except BaseException:
            # The harness outlives this example: leave a live coordinator and channel behind,
            # so that Hypothesis's replay of the failure meets the same error, not a closed
            # channel (which it would report as a flaky strategy, hiding this error).
            self.coordinator = self.run(Coordinator.start(self.config, clock=self.clock))
            self._connect()
            raise
        # The dead process's connections go last (a real one's close as the kernel reaps it).
        self.run(dead._store.close())
        self._connect()
        self.reap()
        self.wake()

    def close(self) -> None:
        self.channel.close()
        self.run(self.coordinator.stop(grace=0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _kill(coordinator: Coordinator) -> None:
    await coordinator._server.stop(None)  # None: every call in flight is cancelled at once
    # A killed process's tasks die with it: the pusher's must not outlive this coordinator
    # (left pending, each dead coordinator's would be destroyed by the garbage collector
    # during some later test, on a closed loop).
    await coordinator.pusher.stop(0)
    coordinator._store._release_lock()


class JobLifecycle(RuleBasedStateMachine):
    coordinators: ClassVar[Coordinators]
    _queues = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.h = self.coordinators
        self.queue = f"model-{self.h.run_id}-{next(self._queues)}"
        self.jobs: dict[str, ModelJob] = {}
        # Last state read back from the server, per job (the invariant compares with it).
        self.seen: dict[str, int] = {}
        self.seen_attempt: dict[str, int] = {}
        self.seen_history: dict[str, int] = {}
        # The jobs per state GetQueue last agreed with (None: not asked yet).
        self.stats_seen: Counter[int] | None = None
        # What the step that just ran may do: its arrows, and the jobs whose attempt counter
        # it may lower (a release does not count its attempt; a retry resets the budget).
        self.step = "start"
        self.arrows: frozenset[tuple[int, int]] = QUIET
        self.uncounted: set[str] = set()
        # Jobs whose attempt history the step adds to (a receipt, an expiry) or must keep (a
        # retry): read one by one (GetJob), as a list leaves the history out.
        self.reread: set[str] = set()
        self.crashes = 0

    # -- helpers -----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.h.clock.now()

    def _did(self, *names: str) -> None:
        self.step = "+".join(names)
        self.arrows = frozenset().union(QUIET, *(TRANSITIONS[name] for name in names))
        self.uncounted = set()
        self.reread = set()

    def _call(self, method: Callable[..., T], request: Any) -> tuple[grpc.StatusCode, T | None]:
        try:
            return OK, method(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            code = error.code()
            assert code == REFUSED, f"{self.step}: {code} {error.details()}"
            return code, None

    def _pick(self, data: st.DataObject, label: str) -> ModelJob:
        return self.jobs[data.draw(st.sampled_from(sorted(self.jobs)), label=label)]

    def _has_tokens(self) -> bool:
        return any(job.tokens for job in self.jobs.values())

    def _pick_leased_before(self, data: st.DataObject) -> tuple[ModelJob, str]:
        """A job that was leased at least once, and one of its tokens (the latest or a stale
        one)."""
        job = self.jobs[
            data.draw(
                st.sampled_from(sorted(j.job_id for j in self.jobs.values() if j.tokens)),
                label="job",
            )
        ]
        token = data.draw(st.sampled_from(job.tokens[::-1]), label="token")
        return job, token

    def _has_receipts(self) -> bool:
        return any(job.last_receipt is not None for job in self.jobs.values())

    # -- producers ---------------------------------------------------------------------------

    def _may_enqueue(self) -> bool:
        return len(self.jobs) < MAX_JOBS

    @precondition(_may_enqueue)
    @rule(
        delay=st.sampled_from([None, 0, 1, 3]),
        max_attempts=st.integers(1, 3),
        lease_seconds=st.sampled_from(LEASE_SECONDS),
    )
    def enqueue(self, delay: int | None, max_attempts: int, lease_seconds: int) -> None:
        self._did("enqueue")
        spec = pb.JobSpec(
            queue=self.queue,
            task_type=TASK,
            max_attempts=max_attempts,
            lease_duration=duration(lease_seconds * S),
            retry_policy=pb.RetryPolicy(
                initial_backoff=duration(INITIAL_BACKOFF_SECONDS * S),
                multiplier=MULTIPLIER,
                max_backoff=duration(MAX_BACKOFF_SECONDS * S),
                jitter=0.0,
            ),
        )
        if delay is not None:
            spec.delay.CopyFrom(duration(delay * S))
        reply = self.h.stub.Enqueue(pb.EnqueueRequest(job=spec), timeout=CALL_TIMEOUT)
        run_at = self.now + (delay or 0) * S
        state = SCHEDULED if run_at > self.now else AVAILABLE
        assert reply.state == state and not reply.deduplicated, f"enqueue: {reply}"
        assert reply.job_id not in self.jobs
        self.jobs[reply.job_id] = ModelJob(
            reply.job_id, max_attempts, lease_seconds * S, state, run_at
        )

    # -- workers -----------------------------------------------------------------------------

    @precondition(some_job_in(AVAILABLE))
    @rule(max_jobs=st.integers(1, 3), confirm=st.sampled_from(CONFIRM_SECONDS))
    def lease(self, max_jobs: int, confirm: int | None) -> None:
        self._did("lease")
        request = pb.LeaseRequest(worker_id=WORKER, queues=[self.queue], max_jobs=max_jobs)
        window: int | None = None
        if confirm is not None:
            request.confirm = True
            window = (confirm or DEFAULT_CONFIRM_SECONDS) * S
            if confirm:
                request.confirm_within.CopyFrom(duration(window))
        event(f"lease confirm={confirm}")
        reply = self.h.stub.Lease(request, timeout=CALL_TIMEOUT)
        due = sorted(
            (job for job in self.jobs.values() if job.state == AVAILABLE),
            key=lambda job: (job.run_at, job.job_id),
        )
        expected = [job.job_id for job in due[:max_jobs]]
        assert [leased.job_id for leased in reply.jobs] == expected, "dispatch order"
        handed_out = {t for job in self.jobs.values() for t in job.tokens}
        for leased in reply.jobs:
            job = self.jobs[leased.job_id]
            # A finished job is never leased again, unless RetryJob made it AVAILABLE.
            assert job.state == AVAILABLE, f"leased a {state_name(job.state)} job: {job}"
            assert leased.lease_token not in handed_out, "a lease token was handed out twice"
            assert len(leased.lease_token) == 32, "a lease token is 128 bits in hex"
            job.state = LEASED
            job.attempt += 1
            job.token = leased.lease_token
            job.tokens.append(leased.lease_token)
            job.leased_at = self.now
            # Unconfirmed, the lease runs only for its window (at most the job's own lease).
            held = job.lease_duration if window is None else min(window, job.lease_duration)
            job.lease_expires_at = self.now + held
            job.unconfirmed = window is not None
            job.digest = None
            assert leased.attempt == job.attempt, f"lease: attempt {leased.attempt}, model {job}"
            assert leased.max_attempts == job.max_attempts, f"lease: model {job}"
            assert leased.lease_expires_at.ToMicroseconds() == job.lease_expires_at, "lease"

    @precondition(_has_tokens)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        self._did("heartbeat")
        job, token = self._pick_leased_before(data)
        code, reply = self._call(
            self.h.stub.Heartbeat, pb.HeartbeatRequest(job_id=job.job_id, lease_token=token)
        )
        accepted = self._holds(job, token)
        event(f"heartbeat {'accepted' if accepted else 'refused'}")
        assert (code == OK) == accepted, f"heartbeat accepted={code == OK}, model {accepted}"
        if reply is None:
            return
        # At most one valid lease per job: only the latest token handed out is ever accepted.
        assert token == job.tokens[-1], f"a stale token held the lease: {job}"
        assert job.lease_expires_at is not None
        if job.unconfirmed:
            event("heartbeat confirms the lease")
        job.unconfirmed = False  # any heartbeat for the lease token confirms it
        job.lease_expires_at = max(job.lease_expires_at, self.now + job.lease_duration)
        assert reply.lease_expires_at.ToMicroseconds() == job.lease_expires_at, f"{job}"
        assert reply.cancel_requested == job.cancel_requested, f"heartbeat: model {job}"

    def _holds(self, job: ModelJob, token: str) -> bool:
        return (
            job.state == LEASED
            and token == job.token
            and job.lease_expires_at is not None
            and job.lease_expires_at > self.now
        )

    def _draw_receipt(self, data: st.DataObject) -> pb.ReceiptRequest:
        """A receipt for a job leased before, with its latest or a stale token."""
        job, token = self._pick_leased_before(data)
        outcome = data.draw(st.sampled_from(RECEIPTS), label="outcome")
        request = pb.ReceiptRequest(job_id=job.job_id, lease_token=token)
        if outcome.startswith("success"):
            request.outcome = pb.OUTCOME_SUCCESS
            request.result = b"done" if outcome == "success-result" else b""
            return request
        if outcome == "release":
            request.outcome = pb.OUTCOME_RELEASE
        else:
            request.outcome = pb.OUTCOME_FAILURE
            request.error.CopyFrom(
                pb.JobError(message="boom", type="Boom", non_retryable=outcome == "failure-final")
            )
        retry_after = data.draw(st.sampled_from([None, 0, 3]), label="retry_after")
        if retry_after is not None:
            request.retry_after.CopyFrom(duration(retry_after * S))
        return request

    @precondition(_has_tokens)
    @rule(data=st.data())
    def receipt(self, data: st.DataObject) -> None:
        self._send_receipts([self._draw_receipt(data)], batch=False)

    @precondition(_has_receipts)
    @rule(data=st.data())
    def repeat_receipt(self, data: st.DataObject) -> None:
        """The same receipt again, byte for byte (a worker retrying after a lost reply)."""
        sent = [job for job in self.jobs.values() if job.last_receipt is not None]
        job = data.draw(st.sampled_from(sent), label="job")
        assert job.last_receipt is not None
        self._send_receipts([job.last_receipt], batch=False)

    @precondition(_has_tokens)
    @rule(data=st.data(), size=st.integers(2, 3))
    def receipt_batch(self, data: st.DataObject, size: int) -> None:
        """Several receipts in one ReceiptBatch, the same job maybe more than once: each item
        is applied as if it came alone, in order."""
        self._send_receipts([self._draw_receipt(data) for _ in range(size)], batch=True)

    def _send_receipts(self, requests: list[pb.ReceiptRequest], *, batch: bool) -> None:
        names = {f"settle {pb.Outcome.Name(r.outcome).removeprefix('OUTCOME_')}" for r in requests}
        if any(self.jobs[r.job_id].cancel_requested for r in requests):
            names.add("cancel (LEASED)")
        self._did(*sorted(names))
        results: list[tuple[grpc.StatusCode, pb.ReceiptResponse | None]]
        if batch:
            reply = self.h.stub.ReceiptBatch(
                pb.ReceiptBatchRequest(receipts=requests), timeout=CALL_TIMEOUT
            )
            results = [
                (grpc.StatusCode.OK if item.code == 0 else _code(item.code), item.response)
                for item in reply.results
            ]
            assert len(results) == len(requests), f"{len(results)} results"
        else:
            results = [self._call(self.h.stub.Receipt, requests[0])]
        for request, (code, response) in zip(requests, results, strict=True):
            job = self.jobs[request.job_id]
            job.last_receipt = request
            self.reread.add(job.job_id)
            expected = self._settle(job, request)
            assert code == (OK if expected else REFUSED), f"receipt {code}, model {expected}"
            if not expected:
                continue
            assert response is not None
            assert response.state == job.state, (
                f"receipt: {state_name(response.state)}, model {job}"
            )
            if job.state in PENDING:
                assert response.next_run_at.ToMicroseconds() == job.run_at, f"model {job}"
            else:
                assert not response.HasField("next_run_at"), f"receipt: model {job}"

    def _settle(self, job: ModelJob, request: pb.ReceiptRequest) -> bool:
        """Applies a receipt to the model the way docs/state-machine.md says (Fencing); False
        when the coordinator must refuse it."""
        digest = (int(request.outcome), request.result)
        token = request.lease_token
        if token == job.token and job.state != LEASED:
            event(f"receipt repeated ({'same' if job.digest == digest else 'contradicting'})")
            return job.digest == digest  # a repeat: the job is left as it is
        if not self._holds(job, token):
            event("receipt refused (fencing)")
            return False
        retry_after = (
            request.retry_after.ToMicroseconds() if request.HasField("retry_after") else None
        )
        job.history += 1
        job.digest = digest
        job.lease_expires_at = None
        if job.unconfirmed:
            event("receipt on an unconfirmed lease")
        job.unconfirmed = False
        event(f"receipt applied: {pb.Outcome.Name(request.outcome)}")
        if request.outcome == pb.OUTCOME_SUCCESS:
            job.state = SUCCEEDED
        elif job.cancel_requested:
            job.state = CANCELLED
        elif request.outcome == pb.OUTCOME_RELEASE:
            job.attempt -= 1
            self.uncounted.add(job.job_id)
            self._pend(job, retry_after or 0)
        elif request.error.non_retryable or job.attempt >= job.max_attempts:
            job.state = FAILED
        else:
            self._pend(job, backoff(job.attempt) if retry_after is None else retry_after)
        return True

    def _pend(self, job: ModelJob, delay: int) -> None:
        job.run_at = self.now + delay
        job.state = SCHEDULED if delay > 0 else AVAILABLE

    # -- admin -------------------------------------------------------------------------------

    @precondition(some_job_in(SCHEDULED, AVAILABLE, LEASED))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._did("cancel")
        job = self._pick(data, "job")
        code, reply = self._call(self.h.stub.CancelJob, pb.CancelJobRequest(job_id=job.job_id))
        if job.state in (SUCCEEDED, FAILED):
            assert code == REFUSED, f"cancel of a finished job: {job}"
            return
        assert reply is not None, f"cancel of a {state_name(job.state)} job refused"
        if job.state in PENDING:
            job.state = CANCELLED
        elif job.state == LEASED:
            job.cancel_requested = True  # the receipt or the expiry ends it
        assert reply.state == job.state, f"cancel: {state_name(reply.state)}, model {job}"
        assert reply.cancel_requested == job.cancel_requested, f"cancel: model {job}"

    @precondition(some_job_in(FAILED, CANCELLED))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        self._did("retry")
        job = self._pick(data, "job")
        self.reread.add(job.job_id)
        code, reply = self._call(self.h.stub.RetryJob, pb.RetryJobRequest(job_id=job.job_id))
        if job.state not in (FAILED, CANCELLED):
            assert code == REFUSED, f"retry of a {state_name(job.state)} job"
            return
        assert reply is not None, f"retry of a {state_name(job.state)} job refused"
        self.uncounted.add(job.job_id)
        job.state = AVAILABLE
        job.attempt = 0
        job.run_at = self.now
        job.token = None
        job.lease_expires_at = None
        job.unconfirmed = False
        job.cancel_requested = False
        job.digest = None
        assert reply.state == AVAILABLE and reply.attempt == 0, f"retry: {reply.state}"

    # -- time and maintenance ----------------------------------------------------------------

    @precondition(some_job_in(LEASED, SCHEDULED))  # nothing else waits on time
    @rule(seconds=st.sampled_from([0.5, 1, 2, 3, 5, 10, 11, 31]))
    def advance_clock(self, seconds: float) -> None:
        self._did()
        self.step = "advance_clock"
        self.h.clock.advance(seconds)

    @precondition(some_job_in(LEASED))
    @rule()
    def reap(self) -> None:
        self._did("rescue_expired", *self._unconfirmed(), *self._cancel_requested())
        self.h.reap()
        self._rescue_expired()

    @precondition(some_job_in(SCHEDULED))
    @rule()
    def wake(self) -> None:
        self._did("promote_due")
        self.h.wake()
        self._promote_due()

    def _may_crash(self) -> bool:
        # A restart costs ~30 ms, ten steps' worth: a few per sequence, while something is in
        # flight (a lease to keep or rescue, a due time to honour).
        in_flight = some_job_in(LEASED, SCHEDULED)(self)
        return in_flight and self.crashes < MAX_CRASHES

    @precondition(_may_crash)
    @rule()
    def crash_and_restart(self) -> None:
        self.crashes += 1
        event(f"crash with {sum(j.state == LEASED for j in self.jobs.values())} leased")
        self._did("rescue_expired", "promote_due", *self._unconfirmed(), *self._cancel_requested())
        self.h.crash()
        self._rescue_expired()
        self._promote_due()

    def _cancel_requested(self) -> list[str]:
        asked = any(job.cancel_requested for job in self.jobs.values() if job.state == LEASED)
        return ["cancel (LEASED)"] if asked else []

    def _unconfirmed(self) -> list[str]:
        held = any(job.unconfirmed for job in self.jobs.values() if job.state == LEASED)
        return ["rescue_expired (unconfirmed)"] if held else []

    def _rescue_expired(self) -> None:
        for job in self.jobs.values():
            expires = job.lease_expires_at
            if job.state != LEASED or expires is None or expires > self.now:
                continue
            self.reread.add(job.job_id)
            job.history += 1
            job.token = None  # a late receipt from the lost lease is refused
            job.digest = None
            job.lease_expires_at = None
            if job.unconfirmed:
                self._hand_back(job)
                continue
            event(f"lease expired{' (cancel requested)' if job.cancel_requested else ''}")
            if job.cancel_requested:
                job.state = CANCELLED
            elif job.attempt >= job.max_attempts:
                job.state = FAILED
            else:
                # The backoff counts from the start of the lost lease.
                due = max(self.now, job.leased_at + backoff(job.attempt))
                event(f"lease expired: {'waits out its backoff' if due > self.now else 'due'}")
                self._pend(job, due - self.now)

    def _hand_back(self, job: ModelJob) -> None:
        """An unconfirmed lease whose window passed: the reply never reached a worker, so the
        attempt is not spent, there is no backoff, and the job is never FAILED; a job asked
        to stop meanwhile ends CANCELLED, unrun."""
        event(f"unconfirmed lease handed back{' (cancelled)' if job.cancel_requested else ''}")
        job.unconfirmed = False
        job.attempt -= 1
        self.uncounted.add(job.job_id)
        if job.cancel_requested:
            job.state = CANCELLED
        else:
            self._pend(job, 0)

    def _promote_due(self) -> None:
        for job in self.jobs.values():
            if job.state == SCHEDULED and job.run_at <= self.now:
                job.state = AVAILABLE

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def server_matches_model(self) -> None:
        rows = self._read_queue()
        # Jobs are conserved: every enqueued job is there, and nothing else.
        assert sorted(rows) == sorted(self.jobs), (
            f"{self.step}: {len(rows)} rows, {len(self.jobs)} enqueued"
        )
        for job_id in self.reread:
            rows[job_id] = self.h.stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=CALL_TIMEOUT)
        for job_id, row in rows.items():
            self._check_transition(row)
            self._check_row(self.jobs[job_id], row)
            self.seen[job_id] = row.state
            self.seen_attempt[job_id] = row.attempt
            if job_id in self.reread:
                self.seen_history[job_id] = len(row.attempts)
        self._check_counts()

    def _check_counts(self) -> None:
        """The maintained counts (queue_counts) equal a real COUNT(*) of the queue's jobs, read
        together from the store, after every step; and GetQueue's per-state stats, read from
        those counts, match the model. GetQueue (the costliest read, ~3 ms) is asked only when
        the model's jobs per state differ from what it last confirmed: otherwise the rows
        (checked above) and so COUNT(*) and the counts it reads are as they were then."""
        kept, real = self.h.counts(self.queue)
        assert kept == real, f"after {self.step}: queue_counts {kept}, COUNT(*) {real}"
        model = Counter(job.state for job in self.jobs.values())
        if model == self.stats_seen:
            return
        stats = self.h.stub.GetQueue(
            pb.GetQueueRequest(name=self.queue), timeout=CALL_TIMEOUT
        ).stats
        self.stats_seen = model
        for state, name in STATS_FIELDS.items():
            assert getattr(stats, name) == model[state], (
                f"after {self.step}: GetQueue {name}={getattr(stats, name)}, model {model[state]}"
            )

    def _read_queue(self) -> dict[str, pb.Job]:
        rows: dict[str, pb.Job] = {}
        token = ""
        while True:
            reply = self.h.stub.ListJobs(
                pb.ListJobsRequest(
                    queue=self.queue, page_size=1000, page_token=token, view=pb.JOB_VIEW_BASIC
                ),
                timeout=CALL_TIMEOUT,
            )
            rows.update((job.job_id, job) for job in reply.jobs)
            token = reply.next_page_token
            if not token:
                return rows

    def _check_transition(self, row: pb.Job) -> None:
        before = self.seen.get(row.job_id, NEW)
        name = state_name
        if before != row.state:
            assert (before, row.state) in self.arrows, (
                f"{self.step} moved job {row.job_id} {name(before)} -> {name(row.state)}, "
                "which is no arrow of that transition in docs/state-machine.md"
            )
        # Attempts never decrease: the history only grows, and the counter goes down only
        # when a release un-counts its attempt or a retry resets the budget.
        if row.job_id in self.reread:
            assert len(row.attempts) >= self.seen_history.get(row.job_id, 0)
        if row.attempt < self.seen_attempt.get(row.job_id, 0):
            assert row.job_id in self.uncounted, f"{self.step} lowered attempt of {row.job_id}"

    def _check_row(self, job: ModelJob, row: pb.Job) -> None:
        where = f"after {self.step}, job {job.job_id}"
        assert row.state == job.state, (
            f"{where}: {state_name(row.state)}, model {state_name(job.state)}"
        )
        assert row.attempt == job.attempt, f"{where}: attempt {row.attempt}, model {job.attempt}"
        if job.job_id in self.reread:
            assert len(row.attempts) == job.history, f"{where}: {len(row.attempts)} attempts"
        assert row.cancel_requested == job.cancel_requested, where
        if job.state in PENDING:
            assert row.run_at.ToMicroseconds() == job.run_at, f"{where}: run_at"
        if job.state == LEASED:
            assert job.lease_expires_at is not None
            assert row.lease_expires_at.ToMicroseconds() == job.lease_expires_at, where
            assert row.leased_by == WORKER, where


def test_the_job_lifecycle_follows_the_model(
    server_config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The background services never run on their own: the steps call their run_once, so that
    # nothing moves between two steps (and a restart does not wait for a first pruner pass
    # over every queue of the shared database, ~0.7 ms a queue). Nor does the pusher (no queue
    # here pushes), whose first pass at every start lists every queue with its counts.
    monkeypatch.setattr(BackgroundService, "start", lambda self: None)
    monkeypatch.setattr(Pusher, "start", lambda self: None)
    coordinators = Coordinators(replace(server_config, log_level="error"))
    try:
        JobLifecycle.coordinators = coordinators
        run_state_machine_as_test(JobLifecycle, settings=SETTINGS)
    finally:
        coordinators.close()
