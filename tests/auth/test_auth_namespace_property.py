"""The namespace property (issue 10, item 2): principals of three namespaces (one of them held
to a queue glob) doing random enqueues, gets, waits, cancels, retries, lists, leases and
schedule calls on a real coordinator with --auth never see a job, queue or schedule of another
namespace (or a job, queue or schedule outside their globs), and a job they may not see is
NOT_FOUND in exactly the words of a job that does not exist. Run on SQLite and PostgreSQL;
bounded (a few hundred RPCs) so that each store takes seconds."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import parse_roles
from conveyor_server.store.tokens import TokenStore
from databases import DB_KINDS
from fuzz.test_fuzz_requests import _Server
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

QUEUES = ("mail", "mail-eu", "billing")
SCHEDULES = ("nightly", "hourly")
# name -> (namespace, queue globs); every one an admin, so that only scope limits it.
PRINCIPALS = {
    "root": ("default", ()),
    "alpha": ("alpha", ()),
    "alpha-mail": ("alpha", ("mail*",)),
    "beta": ("beta", ()),
}
MISSING_JOB_ID = "0" * 32
NO_WAIT = duration_pb2.Duration(nanos=1_000_000)
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Principal:
    name: str
    namespace: str
    globs: tuple[str, ...]
    metadata: tuple[tuple[str, str], ...]

    def may_use(self, queue: str) -> bool:
        return not self.globs or any(fnmatch.fnmatchcase(queue, g) for g in self.globs)

    def sees(self, namespace: str, queue: str) -> bool:
        return namespace == self.namespace and self.may_use(queue)


@dataclass
class World:
    """What was created, and where: the model the replies are judged against."""

    stub: rpc.CoordinatorServiceStub
    principals: dict[str, Principal]
    jobs: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (namespace, queue)
    job_order: list[str] = field(default_factory=list)
    queues: set[tuple[str, str]] = field(default_factory=set)
    schedules: set[tuple[str, str]] = field(default_factory=set)

    def call(
        self, p: Principal, method: str, request: object
    ) -> tuple[object, grpc.RpcError | None]:
        try:
            reply = getattr(self.stub, method)(request, metadata=p.metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return None, error
        return reply, None

    def check_job(self, p: Principal, job: pb.Job | pb.LeasedJob) -> None:
        assert job.job_id in self.jobs, f"{p.name} was shown a job nobody enqueued"
        namespace, queue = self.jobs[job.job_id]
        assert p.sees(namespace, queue), f"{p.name} saw {namespace}'s job in {queue}"
        assert job.queue == queue, f"{p.name} saw queue {job.queue!r}, not {queue!r}"
        assert "/" not in job.task_type


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    config = ServerConfig(
        db_url=db_url,
        listen="127.0.0.1:0",
        log_level="error",
        sqlite_synchronous="NORMAL",
        auth=True,
        enqueue_rate=0,
        max_long_polls=0,
    )
    server = _Server(config)
    tokens = TokenStore(db_url)
    principals = {
        name: Principal(
            name,
            namespace,
            globs,
            (
                (
                    "authorization",
                    f"Bearer {tokens.create(name, namespace, parse_roles(['admin']), globs)}",
                ),
            ),
        )
        for name, (namespace, globs) in PRINCIPALS.items()
    }
    tokens.close()
    try:
        with grpc.insecure_channel(server.coordinator.address) as channel:
            yield World(rpc.CoordinatorServiceStub(channel), principals)
    finally:
        server.stop()


def _enqueue(w: World, p: Principal, queue: str) -> None:
    job = pb.JobSpec(queue=queue, task_type="send", payload=b"x")
    reply, error = w.call(p, "Enqueue", pb.EnqueueRequest(job=job))
    if not p.may_use(queue):
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        return
    assert error is None, error
    assert isinstance(reply, pb.EnqueueResponse)
    w.jobs[reply.job_id] = (p.namespace, queue)
    w.job_order.append(reply.job_id)
    w.queues.add((p.namespace, queue))


def _by_id(method: str, job_id: str) -> object:
    requests = {
        "GetJob": lambda: pb.GetJobRequest(job_id=job_id),
        "WaitJob": lambda: pb.WaitJobRequest(job_id=job_id, timeout=NO_WAIT),
        "CancelJob": lambda: pb.CancelJobRequest(job_id=job_id),
        "RetryJob": lambda: pb.RetryJobRequest(job_id=job_id),
        "Heartbeat": lambda: pb.HeartbeatRequest(job_id=job_id, lease_token="f" * 32),
    }
    return requests[method]()


def _job_by_id(w: World, p: Principal, method: str, pick: int) -> None:
    job_id = w.job_order[pick % len(w.job_order)] if w.job_order and pick >= 0 else MISSING_JOB_ID
    reply, error = w.call(p, method, _by_id(method, job_id))
    owner = w.jobs.get(job_id)
    if owner is None or not p.sees(*owner):
        assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND, (method, error)
        _, missing = w.call(p, method, _by_id(method, MISSING_JOB_ID))
        assert missing is not None
        assert error.details() == (missing.details() or "").replace(MISSING_JOB_ID, job_id)
        return
    if method == "Heartbeat":  # a made-up lease token on a job it may see
        assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
        return
    if error is not None:  # cancelling a finished job, retrying one that has not failed
        assert method in ("CancelJob", "RetryJob"), (method, error)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (method, error)
        return
    assert isinstance(reply, pb.Job)
    w.check_job(p, reply)


def _list_jobs(w: World, p: Principal, queue: str) -> None:
    reply, error = w.call(p, "ListJobs", pb.ListJobsRequest(queue=queue, page_size=500))
    if not p.may_use(queue or "*"):
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        return
    assert error is None, error
    assert isinstance(reply, pb.ListJobsResponse)
    for job in reply.jobs:
        w.check_job(p, job)
    expected = {j for j, (ns, q) in w.jobs.items() if ns == p.namespace and queue in ("", q)}
    assert {j.job_id for j in reply.jobs} == expected


def _lease(w: World, p: Principal, queues: list[str]) -> None:
    request = pb.LeaseRequest(worker_id=f"w-{p.name}", queues=queues, max_jobs=3)
    reply, error = w.call(p, "Lease", request)
    if not all(p.may_use(q) for q in queues):
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        return
    assert error is None, error
    assert isinstance(reply, pb.LeaseResponse)
    for job in reply.jobs:
        w.check_job(p, job)


def _list_queues(w: World, p: Principal) -> None:
    reply, error = w.call(p, "ListQueues", pb.ListQueuesRequest(page_size=100))
    assert error is None, error
    assert isinstance(reply, pb.ListQueuesResponse)
    assert {q.name for q in reply.queues} == {q for ns, q in w.queues if p.sees(ns, q)}


def _schedule(w: World, p: Principal, name: str, create: bool) -> None:
    if create:
        template = pb.JobSpec(queue="mail", task_type="send")
        schedule = pb.Schedule(name=name, cron="0 3 1 1 *", job=template)
        _, error = w.call(p, "CreateSchedule", pb.CreateScheduleRequest(schedule=schedule))
        if not p.may_use("mail"):
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        elif (p.namespace, name) in w.schedules:
            assert error is not None and error.code() == grpc.StatusCode.ALREADY_EXISTS
        else:
            assert error is None, error
            w.schedules.add((p.namespace, name))
    reply, error = w.call(p, "GetSchedule", pb.GetScheduleRequest(name=name))
    if (p.namespace, name) in w.schedules:
        assert error is None and isinstance(reply, pb.Schedule) and reply.name == name
        assert reply.job.queue == "mail"
    else:
        assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND
        assert "/" not in (error.details() or "")
    listed, error = w.call(p, "ListSchedules", pb.ListSchedulesRequest(page_size=100))
    assert error is None and isinstance(listed, pb.ListSchedulesResponse)
    assert {s.name for s in listed.schedules} == {n for ns, n in w.schedules if ns == p.namespace}


principals = st.sampled_from(sorted(PRINCIPALS))
picks = st.integers(min_value=-1, max_value=1000)
operations = st.one_of(
    st.tuples(st.just("enqueue"), principals, st.sampled_from(QUEUES)),
    st.tuples(
        st.sampled_from(["GetJob", "WaitJob", "CancelJob", "RetryJob", "Heartbeat"]),
        principals,
        picks,
    ),
    st.tuples(st.just("list_jobs"), principals, st.sampled_from(("", *QUEUES))),
    st.tuples(
        st.just("lease"),
        principals,
        st.lists(st.sampled_from(QUEUES), min_size=1, max_size=3, unique=True),
    ),
    st.tuples(st.just("list_queues"), principals),
    st.tuples(st.just("schedule"), principals, st.sampled_from(SCHEDULES), st.booleans()),
)


def _apply(w: World, operation: tuple[object, ...]) -> None:
    kind, name, *args = operation
    p = w.principals[str(name)]
    if kind == "enqueue":
        _enqueue(w, p, str(args[0]))
    elif kind == "list_jobs":
        _list_jobs(w, p, str(args[0]))
    elif kind == "lease":
        _lease(w, p, list(args[0]))  # type: ignore[call-overload]
    elif kind == "list_queues":
        _list_queues(w, p)
    elif kind == "schedule":
        _schedule(w, p, str(args[0]), bool(args[1]))
    else:
        _job_by_id(w, p, str(kind), int(args[0]))  # type: ignore[call-overload]


@pytest.mark.parametrize("db_kind", DB_KINDS)
def test_no_principal_ever_sees_another_namespaces_jobs_queues_or_schedules(
    world: World,
) -> None:
    # The world lives across examples: later examples act among everything made before.
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(st.lists(operations, min_size=1, max_size=20))
    def run(steps: list[tuple[object, ...]]) -> None:
        for step in steps:
            _apply(world, step)

    run()
