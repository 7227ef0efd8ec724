"""The job lifecycle service: what each RPC means, free of gRPC and of SQL.

Delivery is at-least-once: a job is handed to one worker at a time, and handed again only
when that worker's lease ends without a receipt. Fencing: every lease has its own random
token, and the store refuses a heartbeat or receipt whose token is not the current lease's."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from conveyor_server.core import lifecycle
from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.metrics import Finish, Metrics, NoMetrics
from conveyor_server.core.model import (
    EnqueueResult,
    HeartbeatParams,
    HeartbeatResult,
    Job,
    JobPage,
    JobSpecInput,
    JobState,
    LeaseBatch,
    LeasedJob,
    LeaseParams,
    ListJobsParams,
    Micros,
    NewJob,
    Outcome,
    ReceiptParams,
    ReplyLimit,
    TaskTypeRef,
    TransitionResult,
)
from conveyor_server.core.notify import (
    Capability,
    DueTimeAlarm,
    JobFinished,
    QueueWakeups,
    Subscription,
)
from conveyor_server.core.ports import Store
from conveyor_server.core.task_types import TaskTypeService
from conveyor_server.errors import ConveyorError, NotFound

log = structlog.get_logger("conveyor.jobs")

_TRANSITION_EVENTS = {
    JobState.SCHEDULED: "job.retry_scheduled",
    JobState.AVAILABLE: "job.available",
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}


# How often a WaitJob re-reads its job without having been told it finished (jittered).
_WAIT_RECHECK_SECONDS = 30.0

# How long a claim's finding that a queue is out of tokens is trusted.
_DRY_KNOWLEDGE_TTL: Micros = 10 * MICROS_PER_SECOND


@dataclass(frozen=True)
class JobServiceConfig:
    max_depth: int = 16


class JobService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: JobServiceConfig,
        *,
        wakeups: QueueWakeups,
        finished: JobFinished,
        scheduled_alarm: DueTimeAlarm,
        expiry_alarm: DueTimeAlarm,
        task_types: TaskTypeService,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics: Metrics = metrics or NoMetrics()
        self._task_types = task_types
        self._clock = clock
        self._config = config
        self._wakeups = wakeups
        self._finished = finished
        self._scheduled_alarm = scheduled_alarm
        self._expiry_alarm = expiry_alarm
        self._stopping = asyncio.Event()
        # Hand-backs under way: they finish even when their caller is cancelled again.
        self._handing_back: set[asyncio.Task[None]] = set()
        # Queue -> when its bucket next holds a token, and when the last claim here found that.
        self._dry_until: dict[str, tuple[Micros, Micros]] = {}

    def stop_waiting(self) -> None:
        """Ends every long-poll at once (shutdown): they return what they have, usually nothing."""
        self._stopping.set()

    # -- producers ---------------------------------------------------------------------------

    async def enqueue(self, spec: JobSpecInput) -> EnqueueResult:
        await self._task_types.check_payloads([spec], ["job.payload"])
        [outcome] = await self._store.enqueue(
            [new_job(spec, self._clock.now())], atomic=False, max_depth=self._config.max_depth
        )
        if isinstance(outcome, ConveyorError):
            raise outcome
        self.after_enqueue([outcome])
        return outcome

    async def enqueue_batch(self, specs: Sequence[JobSpecInput]) -> list[EnqueueResult]:
        await self._task_types.check_payloads(
            specs, [f"jobs[{i}].payload" for i in range(len(specs))]
        )
        outcomes = await self._store.enqueue(
            [new_job(spec, self._clock.now()) for spec in specs],
            atomic=True,
            max_depth=self._config.max_depth,
        )
        results = [o for o in outcomes if isinstance(o, EnqueueResult)]
        self.after_enqueue(results)
        return results

    def after_enqueue(self, results: Sequence[EnqueueResult]) -> None:
        available: Counter[tuple[str, str]] = Counter()
        self._metrics.enqueued([r for r in results if not r.deduplicated], self._clock.now())
        for result in results:
            if result.deduplicated:
                continue
            log.info(
                "job.enqueued",
                job_id=result.job_id,
                queue=result.queue,
                task_type=result.task_type,
                state=result.state.name,
            )
            if result.state == JobState.AVAILABLE:
                available[(result.queue, result.task_type)] += 1
            elif result.state == JobState.SCHEDULED:
                self._scheduled_alarm.due_at(result.run_at)
        self._announce(available, freed=())

    def _announce(self, available: Counter[tuple[str, str]], freed: Iterable[str]) -> None:
        """Wakes one long-poll per job that became available (one that can take its type),
        and one per queue where a lease ended (it may have freed a slot under the queue's
        concurrency cap; if that one fills up, it passes the wake-up on)."""
        for (queue, task_type), count in available.items():
            self._wakeups.announce(queue, count, frozenset((task_type,)))
        for queue in freed:
            self._wakeups.announce(queue, 1, None)

    # -- workers -----------------------------------------------------------------------------

    async def lease(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_jobs: int,
        wait_seconds: float,
        *,
        task_types: tuple[TaskTypeRef, ...] = (),
        reply_limit: ReplyLimit | None = None,
        confirm_within: Micros | None = None,
    ) -> list[LeasedJob]:
        """Claims up to max_jobs; long-polls up to wait_seconds for work to become due.
        `confirm_within`: hold the leases unconfirmed for that long (see LeaseParams)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        capability = _capability(task_types)
        # The subscription whose news woke this long-poll, until the claim that follows; and
        # the one being claimed under, which news may reach meanwhile.
        woken: Subscription | None = None
        current: Subscription | None = None
        try:
            while True:
                with self._wakeups.subscribe(queues, capability, max_jobs) as current:
                    params = LeaseParams(
                        worker_id=worker_id,
                        queues=tuple(queues),
                        max_jobs=max_jobs,
                        now=self._clock.now(),
                        task_types=task_types,
                        reply_limit=reply_limit,
                        confirm_within=confirm_within,
                    )
                    batch = self._known_dry(params) or await self._claim(params)
                    if batch.left_behind and batch.jobs:
                        # Due jobs this reply had no room for: another long-poll may take them.
                        for queue in queues:
                            self._wakeups.announce(queue, 1, None)
                    leased = batch.jobs
                    if woken is not None:
                        self._wakeups.pass_on(woken, len(leased), max_jobs)
                        woken = None
                    remaining = deadline - loop.time()
                    if leased or remaining <= 0 or self._stopping.is_set():
                        break
                    if batch.retry_at is not None:
                        # A rate limit held work back: look again when its bucket refills.
                        until_tokens = (batch.retry_at - params.now) / MICROS_PER_SECOND
                        remaining = min(remaining, max(until_tokens, 0.001))
                    await self._wait_for_work(current, frozenset(batch.dry_until), remaining)
                    woken = current if current.news else None
        except asyncio.CancelledError:
            # A wake-up this long-poll will not use goes to another sleeper.
            for unused in (woken, current):
                if unused is not None:
                    self._wakeups.forward(unused)
            raise
        if current is not None:
            # News that reached this call while it claimed what it returns: another may use it.
            self._wakeups.forward(current)
        self._metrics.leased(leased, self._clock.now())
        for job in leased:
            log.info(
                "job.leased",
                job_id=job.job_id,
                queue=job.queue,
                task_type=job.task_type,
                attempt=job.attempt,
                worker_id=worker_id,
            )
            self._expiry_alarm.due_at(job.lease_expires_at)
        return leased

    async def _wait_for_work(
        self, subscription: Subscription, dry: frozenset[str], seconds: float
    ) -> None:
        """Sleeps until news in a queue could let this long-poll lease something."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while await _first_of(subscription.event, self._stopping, until - loop.time()):
            if self._stopping.is_set() or subscription.urgent:
                return
            if not subscription.fired <= dry:
                return
            # Receipts and enqueues in a queue whose bucket is empty change nothing before its
            # next token, which `seconds` already ends at: looking again would only cost a
            # write transaction per receipt.
            subscription.event.clear()
            subscription.fired.clear()
            subscription.news.clear()

    def _known_dry(self, params: LeaseParams) -> LeaseBatch | None:
        """An empty batch, without asking the store, when an earlier claim here left every
        queue asked for without a token until later: a worker that just took a bucket's last
        token would otherwise pay a write transaction to learn it. Limits changed by another
        coordinator are seen at the next token, or within _DRY_KNOWLEDGE_TTL, if sooner."""
        until = []
        for queue in params.queues:
            dry_until, learned_at = self._dry_until.get(queue, (0, 0))
            # Claims also tell the store which task types this worker runs (for the queue
            # stats); a slow bucket is still asked now and then so that never goes stale.
            if dry_until <= params.now or params.now - learned_at > _DRY_KNOWLEDGE_TTL:
                return None
            until.append(dry_until)
        return LeaseBatch(
            jobs=[], retry_at=min(until), dry_until=dict(zip(params.queues, until, strict=True))
        )

    def forget_limits(self, queue: str) -> None:
        """The queue's limits changed: what claims learned about its bucket no longer holds."""
        self._dry_until.pop(queue, None)

    async def _claim(self, params: LeaseParams) -> LeaseBatch:
        """Claims in the store; a caller that gives up meanwhile (client deadline, cancel) gets
        nothing, so what the store claimed for it is handed back at once instead of staying
        invisible until its lease expires and costing the jobs an attempt."""
        claim = asyncio.ensure_future(self._store.lease(params))
        try:
            batch = await asyncio.shield(claim)
        except asyncio.CancelledError:
            batch = await claim
            if batch.jobs:
                await self.hand_back(batch.jobs)
            raise
        if batch.dry_until:
            self._metrics.lease_held_back(list(batch.dry_until))
        for queue in params.queues:
            if queue in batch.dry_until:
                self._dry_until[queue] = (batch.dry_until[queue], params.now)
            else:
                self._dry_until.pop(queue, None)
        return batch

    async def hand_back(self, jobs: Sequence[LeasedJob]) -> None:
        """Gives leased jobs back for a caller that will never see them (it cancelled, its
        deadline passed, its connection broke): a RELEASE, so the jobs are AVAILABLE again at
        once and keep their attempt. Runs to the end even if the caller is cancelled again
        meanwhile; `drain` waits for it at shutdown."""
        task = asyncio.ensure_future(self._release_unseen(jobs))
        self._handing_back.add(task)
        task.add_done_callback(self._handing_back.discard)
        await asyncio.shield(task)

    async def drain(self) -> None:
        """Waits for every hand-back under way (before the store closes)."""
        while self._handing_back:
            await asyncio.gather(*self._handing_back, return_exceptions=True)

    async def _release_unseen(self, jobs: Sequence[LeasedJob]) -> None:
        releases = [
            ReceiptParams(
                job_id=job.job_id,
                lease_token=job.lease_token,
                outcome=Outcome.RELEASE,
                result=None,
                error=None,
                retry_after=None,
            )
            for job in jobs
        ]
        await self.receipt(releases)
        log.info("lease.abandoned", released=len(releases))

    async def heartbeat(
        self, items: Sequence[HeartbeatParams]
    ) -> list[HeartbeatResult | ConveyorError]:
        return await self._store.heartbeat(items, self._clock.now())

    async def receipt(
        self, receipts: Sequence[ReceiptParams]
    ) -> list[TransitionResult | ConveyorError]:
        now = self._clock.now()
        outcomes = await self._store.settle(receipts, now, lifecycle.decide_receipt)
        settled = [
            (outcome, receipt.outcome)
            for outcome, receipt in zip(outcomes, receipts, strict=True)
            if isinstance(outcome, TransitionResult)
        ]
        for result, sent in settled:
            if not result.replayed:
                self._metrics.finished(result, _finish(result.state, sent), now)
        self.after_transitions([result for result, _ in settled])
        return outcomes

    def after_expiry(self, expired: Sequence[TransitionResult]) -> None:
        """Leases the reaper ended because they expired without a receipt; those taken with
        confirmation and never confirmed were handed back (their reply never reached a
        worker, most likely), which is no failure of the job."""
        now = self._clock.now()
        lost = [result for result in expired if not result.unconfirmed]
        unconfirmed = [result for result in expired if result.unconfirmed]
        for result in lost:
            self._metrics.finished(result, Finish.EXPIRED, now)
        for result in unconfirmed:
            self._metrics.finished(result, Finish.UNCONFIRMED, now)
        self.after_transitions(lost, event="job.lease_expired")
        self.after_transitions(unconfirmed, event="job.lease_unconfirmed")

    def after_transitions(
        self, results: Sequence[TransitionResult], event: str | None = None, *, leased: bool = True
    ) -> None:
        """Logs each transition and wakes whoever waits on its consequence. `leased`: the jobs
        were leased before (a receipt, an expiry), so their queues may have a free slot."""
        available: Counter[tuple[str, str]] = Counter()
        freed: set[str] = set()
        done: list[str] = []
        for result in results:
            if result.replayed:
                continue
            log.info(
                event or _TRANSITION_EVENTS.get(result.state, "job.transition"),
                job_id=result.job_id,
                queue=result.queue,
                task_type=result.task_type,
                attempt=result.attempt,
                worker_id=result.worker_id,
            )
            if leased:
                freed.add(result.queue)
            if result.state == JobState.AVAILABLE:
                available[(result.queue, result.task_type)] += 1
            elif result.state == JobState.SCHEDULED and result.run_at is not None:
                self._scheduled_alarm.due_at(result.run_at)
            elif result.state.is_terminal:
                done.append(result.job_id)
        self._announce(available, freed)
        self._finished.notify(done)

    def after_promotion(self, promoted: Sequence[TransitionResult]) -> None:
        self._metrics.promoted(promoted)
        self.after_transitions(promoted, event="job.due", leased=False)

    # -- admin -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        return await self._store.get_job(job_id)

    async def list(self, params: ListJobsParams) -> JobPage:
        return await self._store.list_jobs(params)

    async def cancel(self, job_id: str) -> Job:
        now = self._clock.now()
        job = await self._store.cancel(job_id, now)
        if job.state == JobState.CANCELLED:
            if job.finished_at == now:  # cancelled by this call, not an earlier one
                self._metrics.finished(_as_result(job), Finish.CANCELLED, now)
            log.info(
                "job.cancelled",
                job_id=job.job_id,
                queue=job.queue,
                task_type=job.task_type,
                attempt=job.attempt,
                worker_id=job.leased_by or "",
            )
            self._finished.notify([job.job_id])
        else:
            log.info(
                "job.cancel_requested",
                job_id=job.job_id,
                queue=job.queue,
                task_type=job.task_type,
                attempt=job.attempt,
                worker_id=job.leased_by or "",
            )
        return job

    async def retry(self, job_id: str) -> Job:
        job = await self._store.retry(job_id, self._clock.now())
        self._metrics.promoted([_as_result(job)])
        log.info(
            "job.replayed",
            job_id=job.job_id,
            queue=job.queue,
            task_type=job.task_type,
            attempt=job.attempt,
            worker_id="",
        )
        if job.state == JobState.AVAILABLE:
            self._announce(Counter({(job.queue, job.task_type): 1}), freed=())
        elif job.state == JobState.SCHEDULED and job.run_at is not None:
            self._scheduled_alarm.due_at(job.run_at)
        return job

    async def wait(
        self, job_id: str, timeout_seconds: float, visible: Callable[[Job], bool] | None = None
    ) -> Job:
        """Returns the job once it is terminal, or as it is when the timeout passes. A job
        that is not `visible` to the caller is NotFound at the first look (a job never moves
        between queues), so no read is spent on checking it beforehand."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        with self._finished.subscribe([job_id]) as subscription:
            while True:
                job = await self._store.get_job(job_id)
                if visible is not None and not visible(job):
                    raise NotFound(f"job {job_id} not found")
                visible = None
                remaining = deadline - loop.time()
                if job.state.is_terminal or remaining <= 0 or self._stopping.is_set():
                    return job
                # With one coordinator per database, JobFinished hears of every transition
                # to a terminal state; the rare re-read is only a safety net (500 waiters
                # re-reading every second used half a core).
                recheck = _WAIT_RECHECK_SECONDS * random.uniform(0.8, 1.2)  # nosec B311 # jitter
                await _first_of(subscription.event, self._stopping, min(remaining, recheck))
                subscription.event.clear()


def _as_result(job: Job) -> TransitionResult:
    return TransitionResult(
        job_id=job.job_id,
        queue=job.queue,
        task_type=job.task_type,
        attempt=job.attempt,
        worker_id=job.leased_by or "",
        state=job.state,
        run_at=job.run_at,
    )


def _finish(state: JobState, sent: Outcome) -> Finish:
    """How a receipt ended its lease, for metrics."""
    if state == JobState.SUCCEEDED:
        return Finish.SUCCEEDED
    if state == JobState.FAILED:
        return Finish.FAILED
    if state == JobState.CANCELLED:
        return Finish.CANCELLED
    return Finish.RELEASED if sent == Outcome.RELEASE else Finish.RETRIED


def _capability(task_types: tuple[TaskTypeRef, ...]) -> Capability:
    if not task_types:
        return None
    return frozenset((ref.name, str(ref.version or "")) for ref in task_types)


def new_job(spec: JobSpecInput, now: Micros) -> NewJob:
    run_at = spec.run_at if spec.run_at is not None else now + spec.delay
    return NewJob(
        job_id=lifecycle.new_job_id(),
        queue=spec.queue,
        task_type=spec.task_type,
        payload=spec.payload,
        run_at=max(run_at, now),
        delay=spec.delay,
        priority=spec.priority,
        settings=spec.settings,
        idempotency_key=spec.idempotency_key,
        parent_job_id=spec.parent_job_id,
        throttle_key=spec.throttle_key,
        created_at=now,
        task_version=spec.task_version,
        traceparent=spec.traceparent,
    )


async def _first_of(first: asyncio.Event, second: asyncio.Event, seconds: float) -> bool:
    """Waits until either event is set or `seconds` pass; True if one was set."""
    if first.is_set() or second.is_set():
        return True
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)
