"""The coordinator's token cache: a revoked token is looked up again after at most
CACHE_SECONDS, so it stops working within that on every coordinator."""

from __future__ import annotations

from conveyor_server.api.auth import CACHE_SECONDS, PrincipalCache
from conveyor_server.core.auth import Principal, Role

ALICE = Principal("alice", "default", frozenset({Role.PRODUCER}))


class _Table:
    def __init__(self) -> None:
        self.rows: dict[str, Principal] = {"t1": ALICE}
        self.lookups = 0

    def find(self, token: str) -> Principal | None:
        self.lookups += 1
        return self.rows.get(token)


async def test_a_lookup_is_trusted_for_less_than_the_cache_period() -> None:
    table, now = _Table(), [100.0]
    cache = PrincipalCache(table.find, monotonic=lambda: now[0])
    assert await cache.get("t1") == ALICE
    del table.rows["t1"]
    now[0] += CACHE_SECONDS * 0.9
    assert await cache.get("t1") == ALICE
    assert table.lookups == 1


async def test_a_revoked_token_is_refused_once_the_cache_period_has_passed() -> None:
    table, now = _Table(), [100.0]
    cache = PrincipalCache(table.find, monotonic=lambda: now[0])
    assert await cache.get("t1") == ALICE
    del table.rows["t1"]
    now[0] += CACHE_SECONDS
    assert await cache.get("t1") is None


def test_the_cache_period_is_at_most_one_second() -> None:
    assert CACHE_SECONDS <= 1.0
