"""Leader leases: with several coordinators on one PostgreSQL database, exactly one runs each
maintenance service (reaper, cron, pruner) at a time.

A lease is a row in the `leaders` table (service, holder, expires_at), claimed and renewed by
one atomic upsert (Store.claim_leadership). Nothing lives in a database session, so it works
behind PgBouncer in transaction mode, unlike session advisory locks. The holder renews every
RENEW_EVERY; if it dies, another coordinator takes over once the lease ran out (within
LEASE_SECONDS). A coordinator that stops gracefully resigns, so fail-over is at once.

Times come from each coordinator's clock: clocks must agree to well within the margin
between RENEW_EVERY and LEASE_SECONDS (10 s). Correctness of the services themselves never
rests on this (claims skip locked rows, each cron fire is a unique row): a stale leader can
make work happen twice as fast, never twice."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import structlog

from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.model import Micros
from conveyor_server.core.ports import Store

log = structlog.get_logger("conveyor.maintenance")


@dataclass(frozen=True, slots=True)
class LeaderConfig:
    # How long a claim holds without renewal: the longest a dead leader's service waits.
    lease_seconds: float = 15.0
    # How often the holder renews (and a follower checks whether it may take over).
    renew_every_seconds: float = 5.0


def holder_id() -> str:
    """Names this coordinator in the leaders table: host, pid and a random part (a restarted
    process with a reused pid is a new holder)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Leadership:
    """One coordinator's claim on one service. `leads(now)` answers from memory between
    renewals and claims or renews when one is due."""

    def __init__(
        self,
        store: Store,
        service: str,
        holder: str,
        clock: Clock,
        config: LeaderConfig | None = None,
    ) -> None:
        self._store = store
        self._service = service
        self._holder = holder
        self._clock = clock
        self._config = config or LeaderConfig()
        self._leading = False
        self._valid_until: Micros = 0  # when the answer in memory must be asked again

    @property
    def renew_every_seconds(self) -> float:
        return self._config.renew_every_seconds

    async def leads(self, now: Micros) -> bool:
        if now < self._valid_until:
            return self._leading
        until = now + round(self._config.lease_seconds * MICROS_PER_SECOND)
        leading = await self._store.claim_leadership(self._service, self._holder, now, until)
        if leading != self._leading:
            log.info("leader.changed", service=self._service, leading=leading)
        self._leading = leading
        self._valid_until = now + round(self._config.renew_every_seconds * MICROS_PER_SECOND)
        return leading

    async def resign(self) -> None:
        """Idempotent; lets another coordinator take the service at once."""
        if self._leading:
            self._leading = False
            self._valid_until = 0
            await self._store.resign_leadership(self._service, self._holder)
