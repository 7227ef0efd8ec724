"""Leader leases (maintenance/leader.py): one holder per service at a time, renewed by its
holder, taken over once it runs out or at once when its holder resigns. Run on both stores;
two coordinators really sharing a PostgreSQL database are in test_shared_postgres.py."""

from __future__ import annotations

from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.maintenance.leader import LeaderConfig, Leadership
from store_support import store_of

CONFIG = LeaderConfig(lease_seconds=15.0, renew_every_seconds=5.0)


def _pair(coordinator: Coordinator, clock: FakeClock) -> tuple[Leadership, Leadership]:
    store = store_of(coordinator)
    return (
        Leadership(store, "test-service", "a", clock, CONFIG),
        Leadership(store, "test-service", "b", clock, CONFIG),
    )


async def test_only_the_first_claimant_leads(coordinator: Coordinator, clock: FakeClock) -> None:
    a, b = _pair(coordinator, clock)
    assert await a.leads(clock.now())
    assert not await b.leads(clock.now())


async def test_a_leader_that_renews_keeps_its_lease(
    coordinator: Coordinator, clock: FakeClock
) -> None:
    a, b = _pair(coordinator, clock)
    assert await a.leads(clock.now())
    for _ in range(6):  # 30 s, renewing every 5 s
        clock.advance(5)
        assert await a.leads(clock.now())
        assert not await b.leads(clock.now())


async def test_a_silent_leader_is_replaced_once_its_lease_runs_out(
    coordinator: Coordinator, clock: FakeClock
) -> None:
    a, b = _pair(coordinator, clock)
    assert await a.leads(clock.now())
    clock.advance(14.9)
    assert not await b.leads(clock.now())
    clock.advance(5.1)  # 20 s after a's last claim: its 15 s ran out
    assert await b.leads(clock.now())
    assert not await a.leads(clock.now())


async def test_a_resigned_leader_is_replaced_at_once(
    coordinator: Coordinator, clock: FakeClock
) -> None:
    a, b = _pair(coordinator, clock)
    assert await a.leads(clock.now())
    await a.resign()
    assert await b.leads(clock.now())
