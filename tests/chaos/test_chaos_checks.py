"""The chaos run's judges flag what they exist to catch (so a green chaos run means something):
two leases valid at once, a second accepted success, a lost acknowledged job, a missing or
doubled cron fire. Pure functions over made-up records; no coordinator needed."""

from __future__ import annotations

from chaos_checks import (
    MICROS,
    OUTCOME_SUCCESS,
    JobRow,
    LeaseSeen,
    ReportSeen,
    WireLog,
    double_leases,
    fires_once,
    nothing_lost,
    one_success_each,
)


def lease(token: str, seen: float, expires: float, job: str = "j1") -> LeaseSeen:
    return LeaseSeen(job, token, 1, seen, expires, "w")


def receipt(token: str, sent: float, code: str = "OK", job: str = "j1") -> ReportSeen:
    return ReportSeen("receipt", job, token, sent, code, OUTCOME_SUCCESS)


def test_a_lease_granted_while_another_is_unexpired_and_unreported_is_a_double_lease() -> None:
    log = WireLog(
        leases=[lease("a", 10.0, 14.0), lease("b", 11.0, 15.0)],
        reports=[receipt("a", 12.0, "FAILED_PRECONDITION"), receipt("b", 12.5)],
    )
    [violation] = double_leases(log)
    assert "j1" in violation


def test_a_report_accepted_after_the_next_lease_was_seen_is_a_double_lease() -> None:
    # Lease a expired (by its first expiry) before b was seen, but a heartbeat of a sent
    # after b was seen was accepted: the coordinator honoured both at once.
    beat = ReportSeen("heartbeat", "j1", "a", 20.0, "OK", expires=24.0)
    log = WireLog(
        leases=[lease("a", 10.0, 12.0), lease("b", 15.0, 19.0)],
        reports=[beat, receipt("b", 16.0)],
    )
    assert len(double_leases(log)) == 1


def test_leases_one_after_another_are_not_flagged() -> None:
    log = WireLog(
        leases=[lease("a", 10.0, 14.0), lease("b", 14.0, 18.0), lease("c", 12.0, 16.0, "j2")],
        # a's receipt was lost in transit and refused later: a ended at its expiry.
        reports=[receipt("a", 11.0, "transport:UNAVAILABLE"), receipt("b", 15.0)],
    )
    assert double_leases(log) == []


def test_an_accepted_receipt_ends_the_lease_when_it_was_first_sent() -> None:
    log = WireLog(
        leases=[lease("a", 10.0, 14.0), lease("b", 11.5, 15.5)],
        reports=[
            ReportSeen("receipt", "j1", "a", 11.0, "transport:UNAVAILABLE", 3),
            ReportSeen("receipt", "j1", "a", 12.0, "OK", 3),  # the retry of a release
            receipt("b", 13.0),
        ],
    )
    assert double_leases(log) == []


def test_a_job_needs_exactly_one_accepted_success_named_by_the_database() -> None:
    log = WireLog(
        leases=[lease("a", 1.0, 5.0), lease("b", 6.0, 9.0)],
        reports=[receipt("a", 2.0), receipt("b", 7.0)],
    )
    assert one_success_each(log, [JobRow("j1", "q", 4, "b")]) == [
        "job j1 (q): 2 leases had a success accepted"
    ]
    once = WireLog(leases=log.leases, reports=log.reports[1:])
    assert one_success_each(once, [JobRow("j1", "q", 4, "b")]) == []
    assert one_success_each(once, [JobRow("j1", "q", 4, "a")]) != []
    assert one_success_each(once, [JobRow("j1", "q", 5, "b")]) != []


def test_an_acknowledged_job_missing_or_unsucceeded_is_lost() -> None:
    jobs = {"j1": JobRow("j1", "q", 4, "a"), "j2": JobRow("j2", "q", 2, None)}
    assert nothing_lost({"k1": "j1"}, jobs) == []
    assert len(nothing_lost({"k1": "j1", "k2": "j2", "k3": "j3"}, jobs)) == 2


def test_every_fire_once_and_one_job_each() -> None:
    first = 1_000 * MICROS
    fires = [(first + i * MICROS, f"c{i}") for i in range(5)]
    jobs = [f"c{i}" for i in range(5)]
    assert fires_once(first, first + 4 * MICROS, MICROS, fires, jobs) == []
    gap = fires[:2] + fires[3:]
    assert fires_once(first, first + 4 * MICROS, MICROS, gap, [j for _, j in gap if j]) != []
    assert fires_once(first, first + 4 * MICROS, MICROS, fires, [*jobs, "c0"]) != []
    assert fires_once(first, first + 4 * MICROS, MICROS, fires, [*jobs, "stray"]) != []
    skipped = [*fires[:4], (first + 4 * MICROS, None)]
    assert fires_once(first, first + 4 * MICROS, MICROS, skipped, jobs[:4]) != []
    assert fires_once(first, first + 4 * MICROS, MICROS, [*fires, fires[0]], jobs) != []
