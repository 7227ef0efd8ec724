"""The pusher: delivers the jobs of push queues to their HTTP endpoints.

For each push queue one long-poll lease loop leases due jobs to this coordinator through the
same JobService.lease path as a pull worker (worker id "push:<coordinator>"), never more than
the target's free slots, so rate limits, per-key buckets, concurrency caps, retries, backoff,
dead-lettering, cancellation and fencing all work as they do for pull workers. Each leased
job is POSTed once (never twice for one lease); the reply becomes a receipt sent with the
lease token, and a receipt the store refuses (the lease ended meanwhile) is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog

from conveyor_server.core import push
from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import (
    HeartbeatParams,
    LeasedJob,
    Micros,
    QueueConfig,
    ReceiptParams,
)
from conveyor_server.core.push import PushConfig, PushOutcome
from conveyor_server.errors import ConveyorError

log = structlog.get_logger("conveyor.pusher")

# A long-poll lease waits this long for due work before asking again (it wakes at once on
# news in the queue: an enqueue, a receipt, a limit change).
LEASE_WAIT_SECONDS = 30.0
# How often the set of push queues is read again, for changes made through another
# coordinator; changes made through this one are seen at once.
REFRESH_SECONDS = 30.0
ERROR_BACKOFF_SECONDS = 1.0
# A lease outlives the request by this much, so the receipt of a request that took its whole
# timeout still arrives while the lease holds.
LEASE_MARGIN: Micros = 5 * MICROS_PER_SECOND
# How long stop() lets requests in flight finish before cancelling them.
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class PusherConfig:
    worker_id: str
    # A reply body larger than this is not a result (the server's payload limit).
    max_result_bytes: int
    lease_wait_seconds: float = LEASE_WAIT_SECONDS
    refresh_seconds: float = REFRESH_SECONDS


# The settings of the push queues only, a page at a time (no job counts: this is polled).
ListPushQueues = Callable[[str | None, int], Awaitable[list[QueueConfig]]]
_PAGE = 1000


class _QueueLoop:
    """One push queue: a lease loop bounded by the target's max_concurrency."""

    def __init__(self, pusher: Pusher, name: str, target: PushConfig) -> None:
        self.name = name
        self.target = target
        self._pusher = pusher
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"conveyor-push-{name}")

    async def _run(self) -> None:
        pusher = self._pusher
        while True:
            free = self.target.max_concurrency - len(self._in_flight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                leased = await pusher.jobs.lease(
                    pusher.config.worker_id, [self.name], free, pusher.config.lease_wait_seconds
                )
            except Exception as exc:
                # A background loop logs and goes on (a broken disk, say), never dies silently.
                log.error("push.lease_failed", queue=self.name, error=type(exc).__name__)
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            for job in leased:
                task = asyncio.create_task(pusher.deliver_logged(job, self.target))
                self._in_flight.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_freed.set()

    async def stop(self, grace: float) -> None:
        await _cancelled(self.task)
        if self._in_flight:
            _done, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class Pusher:
    name = "pusher"

    def __init__(
        self,
        jobs: JobService,
        list_push_queues: ListPushQueues,
        clock: Clock,
        config: PusherConfig,
    ) -> None:
        self.jobs = jobs
        self.config = config
        self._list_push_queues = list_push_queues
        self._clock = clock
        # One client for every push: connections to a function are reused across requests.
        # aiohttp rather than httpx: posting to a local no-op function it used a tenth of the
        # CPU per request (0.2 ms against 1.6-2 ms) and sent 6-10x the requests per second
        # (bench/push_client.py). Made on first use, on the running loop.
        self._client: aiohttp.ClientSession | None = None
        self._loops: dict[str, _QueueLoop] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="conveyor-pusher")

    def queue_changed(self, _name: str) -> None:
        """A queue's settings changed here: read the push queues again now."""
        self._changed.set()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stops leasing, lets requests in flight finish for `grace` seconds; idempotent."""
        if self._task is not None:
            await _cancelled(self._task)
            self._task = None
        loops, self._loops = list(self._loops.values()), {}
        await asyncio.gather(*(loop.stop(grace) for loop in loops))
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _watch(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self._refresh()
            except Exception as exc:
                log.error("push.refresh_failed", error=type(exc).__name__)
            # asyncio.wait, not wait_for: on Python 3.11 wait_for returns the event's wake-up
            # and drops a cancel that arrives in the same tick, and stop() then waited for a
            # task that went on refreshing every 30 s.
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({changed}, timeout=self.config.refresh_seconds)
            finally:
                changed.cancel()

    async def _refresh(self) -> None:
        targets: dict[str, PushConfig] = {}
        after: str | None = None
        while True:
            page = await self._list_push_queues(after, _PAGE)
            for queue in page:
                if queue.push is not None and not queue.paused:
                    targets[queue.name] = queue.push
            if len(page) < _PAGE:
                break
            after = page[-1].name
        for name, loop in list(self._loops.items()):
            if targets.get(name) != loop.target:
                del self._loops[name]
                await loop.stop(STOP_GRACE_SECONDS)
        for name, target in targets.items():
            if name not in self._loops:
                self._loops[name] = _QueueLoop(self, name, target)
                log.info("push.queue_started", queue=name)

    async def deliver_logged(self, job: LeasedJob, target: PushConfig) -> None:
        try:
            await self.deliver(job, target)
        except Exception as exc:
            # The lease then ends on its own and the job is retried as after a lost worker.
            log.error("push.delivery_failed", job_id=job.job_id, error=type(exc).__name__)

    async def deliver(self, job: LeasedJob, target: PushConfig) -> None:
        """POSTs one leased job, once, and settles it from the reply."""
        expires_at = await self._long_enough(job, target)
        if expires_at is None:
            return
        outcome = await self._post(job, target, expires_at)
        self.delivered += 1
        if outcome.outcome is None:
            log.info("push.accepted", job_id=job.job_id, queue=job.queue)
            return  # 202: the function sends its own receipt with the lease token.
        receipt = ReceiptParams(
            job_id=job.job_id,
            lease_token=job.lease_token,
            outcome=outcome.outcome,
            result=outcome.result,
            error=outcome.error,
            retry_after=outcome.retry_after,
        )
        (settled,) = await asyncio.shield(self.jobs.receipt([receipt]))
        if isinstance(settled, ConveyorError):
            # Fencing: the lease ended (expired, cancelled) before the reply; the answer is late.
            log.info("push.receipt_refused", job_id=job.job_id, reason=type(settled).__name__)

    async def _long_enough(self, job: LeasedJob, target: PushConfig) -> Micros | None:
        """The lease's end, extended first when the job's lease is shorter than the request
        may take; None when the lease is already lost."""
        needed = target.timeout + LEASE_MARGIN
        if job.lease_expires_at - self._clock.now() >= needed:
            return job.lease_expires_at
        params = HeartbeatParams(
            job_id=job.job_id, lease_token=job.lease_token, extend_by=needed, checkpoint=None
        )
        (result,) = await self.jobs.heartbeat([params])
        if isinstance(result, ConveyorError):
            log.info("push.lease_lost", job_id=job.job_id, reason=type(result).__name__)
            return None
        return result.lease_expires_at

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None:
            # No connection limit here: each queue loop bounds its own requests in flight.
            # aiohttp never sends a POST twice (it retries only idempotent methods).
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            self._client = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._client

    async def _post(self, job: LeasedJob, target: PushConfig, expires_at: Micros) -> PushOutcome:
        now = self._clock.now()
        headers = push.request_headers(target, job, deadline=expires_at, now=now)
        limit = self.config.max_result_bytes
        timeout = aiohttp.ClientTimeout(total=target.timeout / MICROS_PER_SECOND)
        try:
            async with self._session().post(
                target.url,
                data=job.payload,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as reply:
                body = bytearray()
                async for chunk in reply.content.iter_any():
                    body += chunk
                    if len(body) > limit:
                        break  # Enough to know it is too large; the rest is not read.
                return push.outcome_of_reply(
                    reply.status,
                    bytes(body),
                    reply.headers.get("Retry-After"),
                    limit,
                    self._clock.now(),
                )
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            return push.outcome_of_transport_error(True, type(exc).__name__)
        except aiohttp.ClientError as exc:  # connection errors, a URL it refuses (InvalidURL)
            return push.outcome_of_transport_error(False, type(exc).__name__)


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancels `task` and waits until it has ended. Unlike awaiting it under
    suppress(CancelledError), a cancel of the caller itself still propagates."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("push.loop_failed", error=type(task.exception()).__name__)
