"""The worker's heartbeat side task: extends the leases of running jobs, a third of the way
through each lease, in one HeartbeatBatch for every job that is due at about the same time,
carrying only the newest unsent checkpoint of each. Replies that say a job was cancelled, or
that its lease is gone, are handed back to the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from conveyor._running import RunningJob
from conveyor.errors import status_code
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

log = logging.getLogger("conveyor.worker")

# A job whose heartbeat falls due within this fraction of its interval goes along with the
# batch being sent now (early is harmless; it saves a call).
_EARLY_FRACTION = 0.25
# After a failed HeartbeatBatch call, try again this soon (leases last at least 1 s).
_RETRY_AFTER_FAILURE = 0.25
_MAX_SLEEP = 1.0
_MAX_BATCH = 500
_CALL_TIMEOUT = 10.0
# A confirmation call ends this long before the earliest lease it confirms would expire.
_CONFIRM_MARGIN = 0.05


@dataclass(frozen=True)
class Confirmation:
    """The coordinator's answer to the confirmation of a Lease reply."""

    # Confirmed: run these.
    to_run: list[pb.LeasedJob] = field(default_factory=list)
    # Confirmed, but a CancelJob reached them between the Lease and the confirmation: report
    # them without running their handlers.
    cancel_requested: list[pb.LeasedJob] = field(default_factory=list)


class Heartbeats:
    def __init__(
        self,
        stub: rpc.CoordinatorServiceAsyncStub,
        running: Mapping[str, RunningJob],  # by lease token
        *,
        on_cancel_requested: Callable[[RunningJob], None],
        on_lease_lost: Callable[[RunningJob, str], None],
    ) -> None:
        self._stub = stub
        self._running = running
        self._on_cancel_requested = on_cancel_requested
        self._on_lease_lost = on_lease_lost
        self._wakeup = asyncio.Event()
        self._asked: set[str] = set()  # lease tokens of jobs whose handler called heartbeat_now()
        self._sleeping_until = 0.0

    def tracked(self, running: RunningJob) -> None:
        """Call after adding a job to `running`: wakes the loop if it sleeps past its due time."""
        if running.next_heartbeat < self._sleeping_until:
            self._wakeup.set()

    def ask(self, lease_token: str) -> None:
        """A heartbeat as soon as possible for this job (call on the event loop)."""
        self._asked.add(lease_token)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            due = self._due(time.monotonic())
            for start in range(0, len(due), _MAX_BATCH):
                await self._send(due[start : start + _MAX_BATCH])
            await self._sleep_until_next()

    def _due(self, now: float) -> list[RunningJob]:
        asked, self._asked = self._asked, set()
        return [
            r
            for r in self._running.values()
            if r.next_heartbeat - now <= r.interval * _EARLY_FRACTION or r.job.lease_token in asked
        ]

    async def _sleep_until_next(self) -> None:
        now = time.monotonic()
        upcoming = min((r.next_heartbeat for r in self._running.values()), default=now + _MAX_SLEEP)
        self._sleeping_until = min(upcoming, now + _MAX_SLEEP)
        self._wakeup.clear()
        if self._asked:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(self._sleeping_until - now, 0.0)):
                await self._wakeup.wait()
        self._sleeping_until = 0.0

    async def _send(self, due: list[RunningJob]) -> None:
        requests = [self._request(r) for r in due]
        try:
            # wait_for_ready: during a coordinator blip the call waits for the channel to
            # reconnect instead of failing at once; the lease holds meanwhile.
            reply = await self._stub.HeartbeatBatch(
                pb.HeartbeatBatchRequest(heartbeats=requests),
                timeout=_CALL_TIMEOUT,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            log.warning("heartbeats failed (%s: %s); retrying", error.code().name, error.details())
            self._failed(due, requests)
            return
        for running, request, result in zip(due, requests, reply.results, strict=True):
            if self._running.get(running.job.lease_token) is not running:
                continue  # it finished while the call was in flight: its receipt decides
            if result.code == 0:
                if result.response.cancel_requested and running.stop_reason is None:
                    self._on_cancel_requested(running)
                continue
            code = status_code(result.code)
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                self._on_lease_lost(running, result.message)
            else:
                log.warning(
                    "heartbeat for job %s refused (%s): %s",
                    request.job_id,
                    code.name,
                    result.message,
                )
                self._failed([running], [request])

    async def confirm(self, jobs: Sequence[pb.LeasedJob], window: float) -> Confirmation:
        """Confirms the leases of a Lease reply (taken with confirm) in one HeartbeatBatch,
        before any of its jobs runs. A job the coordinator refused (its window passed) is not
        run: it is AVAILABLE again. If the call fails until the first window would pass, none
        is run: the coordinator hands them back unconfirmed."""
        requests = [pb.HeartbeatRequest(job_id=j.job_id, lease_token=j.lease_token) for j in jobs]
        # The window, as the coordinator cut it to each job's lease (measured here, not by
        # comparing clocks with the coordinator's lease_expires_at).
        timeout = (
            min(
                [window]
                + [_seconds(j.lease_duration) for j in jobs if j.HasField("lease_duration")]
            )
            - _CONFIRM_MARGIN
        )
        try:
            reply = await self._stub.HeartbeatBatch(
                pb.HeartbeatBatchRequest(heartbeats=requests),
                timeout=max(timeout, _CONFIRM_MARGIN),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "confirming %d leases failed (%s: %s); the coordinator hands them back",
                len(jobs),
                error.code().name,
                error.details(),
            )
            return Confirmation()
        confirmation = Confirmation()
        for job, result in zip(jobs, reply.results, strict=True):
            if result.code != 0:
                log.warning("lease on job %s not confirmed: %s", job.job_id, result.message)
            elif result.response.cancel_requested:
                confirmation.cancel_requested.append(job)
            else:
                confirmation.to_run.append(job)
        return confirmation

    @staticmethod
    def _request(running: RunningJob) -> pb.HeartbeatRequest:
        running.next_heartbeat = time.monotonic() + running.interval
        checkpoint = running.context._take_unsent_checkpoint()
        return pb.HeartbeatRequest(
            job_id=running.job.job_id, lease_token=running.job.lease_token, checkpoint=checkpoint
        )

    @staticmethod
    def _failed(due: list[RunningJob], requests: list[pb.HeartbeatRequest]) -> None:
        retry_at = time.monotonic() + _RETRY_AFTER_FAILURE
        for running, request in zip(due, requests, strict=True):
            running.next_heartbeat = min(running.next_heartbeat, retry_at)
            if request.HasField("checkpoint"):
                running.context._unsent_again(request.checkpoint)


def _seconds(duration: Any) -> float:
    return float(duration.seconds + duration.nanos / 1e9)
