"""Prometheus metrics: the implementation of the core's Metrics seam, the RPC latency
recorder the API interceptor reports to, and the queue-depth gauge read at scrape time.

Cardinality is bounded: labels carry queue, task type, schedule and RPC method names (never
job ids, keys or payload data), and each label keeps at most MAX_LABEL_VALUES distinct values;
later ones are reported as "other"."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.metrics import Finish
from conveyor_server.core.model import (
    EnqueueResult,
    JobState,
    LeasedJob,
    Micros,
    Queue,
    TransitionResult,
)
from conveyor_server.observability.history import History

MAX_LABEL_VALUES = 1000
OTHER = "other"
# Jobs whose due time or lease start is remembered for the wait and run histograms; beyond
# this the oldest are forgotten (their observation is skipped, never wrong).
MAX_TRACKED_JOBS = 100_000
# How long a scrape trusts the queue counts it read (they cost a count per queue).
JOBS_GAUGE_TTL_SECONDS = 5.0
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)

QueueLister = Callable[[], Awaitable[list[Queue]]]


class LabelCap:
    """Keeps at most `limit` distinct values of one label; later values become "other"."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class _Tracked:
    """A bounded map from job id to a time, oldest forgotten first."""

    def __init__(self, limit: int = MAX_TRACKED_JOBS) -> None:
        self._limit = limit
        self._times: OrderedDict[str, Micros] = OrderedDict()

    def put(self, job_id: str, at: Micros) -> None:
        self._times[job_id] = at
        self._times.move_to_end(job_id)
        if len(self._times) > self._limit:
            self._times.popitem(last=False)

    def pop(self, job_id: str) -> Micros | None:
        return self._times.pop(job_id, None)


class PrometheusMetrics:
    """Implements conveyor_server.core.metrics.Metrics; also keeps the dashboard's History."""

    def __init__(self, clock_now: Callable[[], Micros]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.history = History()
        self._now = clock_now
        self._queue = LabelCap()
        self._task_type = LabelCap()
        self._schedule = LabelCap()
        self._method = LabelCap()
        self._due = _Tracked()
        self._leased_at = _Tracked()
        self._jobs_gauge = _JobsGauge()
        self.registry.register(self._jobs_gauge)
        r = self.registry
        self.enqueued_total = Counter(
            "conveyor_jobs_enqueued", "Jobs enqueued.", ["queue", "task_type"], registry=r
        )
        self.leased_total = Counter(
            "conveyor_jobs_leased", "Leases handed out.", ["queue", "task_type"], registry=r
        )
        self.finished_total = Counter(
            "conveyor_jobs_finished",
            "Leases (or unleased jobs) ended, by outcome: succeeded, failed (dead-lettered), "
            "retried, expired, cancelled, released.",
            ["queue", "task_type", "outcome"],
            registry=r,
        )
        self.dead_lettered_total = Counter(
            "conveyor_jobs_dead_lettered", "Jobs that reached FAILED.", ["queue"], registry=r
        )
        self.throttled_total = Counter(
            "conveyor_lease_throttled",
            "Claims that found a queue's rate-limit bucket empty.",
            ["queue"],
            registry=r,
        )
        self.wait_seconds = Histogram(
            "conveyor_job_wait_seconds",
            "Time from due to leased.",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.run_seconds = Histogram(
            "conveyor_job_run_seconds",
            "Time from leased to receipt (or expiry).",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.schedule_fires_total = Counter(
            "conveyor_schedule_fires", "Schedule fires that enqueued a job.", ["schedule"],
            registry=r,
        )  # fmt: skip
        self.schedule_skipped_total = Counter(
            "conveyor_schedule_skipped_fires",
            "Schedule fires that enqueued nothing (overlap policy or a refused template).",
            ["schedule"],
            registry=r,
        )
        self.schedule_misfires_total = Counter(
            "conveyor_schedule_misfires",
            "Schedule fires handled more than the misfire grace (60 s) after their time "
            "(the coordinator was down or behind); fires a SKIP policy drops are not counted.",
            ["schedule"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "conveyor_rpc_duration_seconds",
            "gRPC call latency by method and status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )

    # -- the core's Metrics seam ---------------------------------------------------------------

    def enqueued(self, results: Sequence[EnqueueResult], now: Micros) -> None:
        for result in results:
            self.enqueued_total.labels(
                self._queue(result.queue), self._task_type(result.task_type)
            ).inc()
            if result.state in (JobState.AVAILABLE, JobState.SCHEDULED):
                self._due.put(result.job_id, result.run_at)

    def promoted(self, results: Sequence[TransitionResult]) -> None:
        for result in results:
            if result.run_at is not None:
                self._due.put(result.job_id, result.run_at)

    def leased(self, jobs: Sequence[LeasedJob], now: Micros) -> None:
        for job in jobs:
            queue = self._queue(job.queue)
            self.leased_total.labels(queue, self._task_type(job.task_type)).inc()
            self.history.count(queue, "started", now)
            due = self._due.pop(job.job_id)
            if due is None and job.attempt == 1:
                due = job.created_at  # enqueued before this process, or forgotten
            if due is not None:
                wait = max(now - due, 0) / MICROS_PER_SECOND
                self.wait_seconds.labels(queue).observe(wait)
                self.history.observe(queue, "wait", wait, now)
            self._leased_at.put(job.job_id, now)

    def lease_held_back(self, queues: Sequence[str]) -> None:
        for queue in queues:
            self.throttled_total.labels(self._queue(queue)).inc()

    def finished(self, result: TransitionResult, finish: Finish, now: Micros) -> None:
        queue = self._queue(result.queue)
        self.finished_total.labels(queue, self._task_type(result.task_type), finish.value).inc()
        if result.state == JobState.FAILED:
            self.dead_lettered_total.labels(queue).inc()
        if result.run_at is not None and result.state in (JobState.AVAILABLE, JobState.SCHEDULED):
            self._due.put(result.job_id, result.run_at)
        started = self._leased_at.pop(result.job_id)
        if started is not None:
            run = max(now - started, 0) / MICROS_PER_SECOND
            self.run_seconds.labels(queue).observe(run)
            self.history.observe(queue, "run", run, now)
        if finish == Finish.SUCCEEDED:
            self.history.count(queue, "finished", now)
        elif finish in (Finish.FAILED, Finish.RETRIED):
            self.history.count(queue, "errors", now)
        elif finish == Finish.EXPIRED:
            self.history.count(queue, "timeouts", now)

    def schedule_fired(self, schedule: str, skipped: bool, late: bool) -> None:
        name = self._schedule(schedule)
        counter = self.schedule_skipped_total if skipped else self.schedule_fires_total
        counter.labels(name).inc()
        if late:
            self.schedule_misfires_total.labels(name).inc()

    # -- the API layer's interceptor -----------------------------------------------------------

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        self.rpc_seconds.labels(self._method(method), code).observe(seconds)

    # -- scraping ------------------------------------------------------------------------------

    async def exposition(self, list_queues: QueueLister) -> bytes:
        """The metrics in the Prometheus text format; queue counts at most
        JOBS_GAUGE_TTL_SECONDS old."""
        await self._jobs_gauge.refresh(list_queues, self._queue)
        return generate_latest(self.registry)


class _JobsGauge(Collector):
    """conveyor_jobs{queue,state}: read from the queue stats at scrape time, cached briefly."""

    def __init__(self) -> None:
        self._samples: list[tuple[str, str, int]] = []
        self._read_at = -JOBS_GAUGE_TTL_SECONDS
        # Concurrent scrapes share one read of the stats (each costs a count per queue).
        self._reading = asyncio.Lock()

    async def refresh(self, list_queues: QueueLister, cap: Callable[[str], str]) -> None:
        async with self._reading:
            if time.monotonic() - self._read_at >= JOBS_GAUGE_TTL_SECONDS:
                await self._read(list_queues, cap)

    async def _read(self, list_queues: QueueLister, cap: Callable[[str], str]) -> None:
        samples: dict[tuple[str, str], int] = {}
        for queue in await list_queues():
            name = cap(queue.config.name)
            for state in JobState:
                key = (name, state.name.lower())
                samples[key] = samples.get(key, 0) + queue.stats.counts.get(state, 0)
        self._samples = [(q, s, n) for (q, s), n in samples.items()]
        self._read_at = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "conveyor_jobs", "Jobs by queue and state.", labels=["queue", "state"]
        )
        for queue, state, count in self._samples:
            gauge.add_metric([queue, state], count)
        yield gauge
