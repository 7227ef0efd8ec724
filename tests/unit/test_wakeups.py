"""The queue wake-up rules (core/notify.py): news wakes about as many long-polls as it has
work, and the baton carries a wake-up on from a long-poll that could not use it."""

from __future__ import annotations

from conveyor_server.core.notify import QueueWakeups, Subscription

Q = "q"
OLD = frozenset({("report", "1.0.0")})
NEW = frozenset({("report", "2.0.0")})


def _woken(subscriptions: list[Subscription]) -> list[int]:
    return [i for i, s in enumerate(subscriptions) if s.event.is_set()]


async def test_news_wakes_as_many_sleepers_as_it_has_work_oldest_first() -> None:
    hub = QueueWakeups()
    sleepers = [hub.subscribe([Q]) for _ in range(10)]
    assert hub.announce(Q, 3, frozenset({"t"})) == 3
    assert _woken(sleepers) == [0, 1, 2]


async def test_news_wakes_sleepers_until_the_jobs_they_ask_for_cover_it() -> None:
    hub = QueueWakeups()
    sleepers = [hub.subscribe([Q], wants=50) for _ in range(10)]
    assert hub.announce(Q, 120, frozenset({"t"})) == 3
    assert _woken(sleepers) == [0, 1, 2]


async def test_news_wakes_only_sleepers_that_run_its_task_type() -> None:
    hub = QueueWakeups()
    sleepers = [hub.subscribe([Q], frozenset({("mail", "")})), hub.subscribe([Q], OLD)]
    hub.announce(Q, 1, frozenset({"report"}))
    assert _woken(sleepers) == [1]


async def test_an_empty_claim_passes_the_wake_up_to_another_kind_of_sleeper() -> None:
    hub = QueueWakeups()
    woken, same_kind, other_kind = (hub.subscribe([Q], c) for c in (OLD, OLD, NEW))
    hub.announce(Q, 1, frozenset({"report"}))
    hub.pass_on(woken, leased=0, max_jobs=1)
    assert _woken([woken, same_kind, other_kind]) == [0, 2]


async def test_an_empty_claim_by_a_long_poll_taking_any_job_ends_the_baton() -> None:
    hub = QueueWakeups()
    woken, other = hub.subscribe([Q]), hub.subscribe([Q], NEW)
    hub.announce(Q, 1, frozenset({"report"}))
    hub.pass_on(woken, leased=0, max_jobs=1)
    assert not other.event.is_set()


async def test_a_full_claim_wakes_one_more_sleeper() -> None:
    hub = QueueWakeups()
    woken, next_one, last = (hub.subscribe([Q]) for _ in range(3))
    hub.announce(Q, 1, None)
    hub.pass_on(woken, leased=1, max_jobs=1)
    assert _woken([woken, next_one, last]) == [0, 1]


async def test_the_baton_skips_sleepers_that_subscribed_after_the_news() -> None:
    hub = QueueWakeups()
    woken = hub.subscribe([Q], OLD)
    hub.announce(Q, 1, frozenset({"report"}))
    later = hub.subscribe([Q], NEW)  # its own first claim saw the job
    hub.pass_on(woken, leased=0, max_jobs=1)
    assert not later.event.is_set()


async def test_a_wake_up_left_unused_is_forwarded() -> None:
    hub = QueueWakeups()
    woken, other = hub.subscribe([Q]), hub.subscribe([Q])
    hub.announce(Q, 1, frozenset({"t"}))
    woken.close()
    hub.forward(woken)
    assert other.event.is_set()
