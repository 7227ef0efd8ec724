"""What the chaos run must show, as pure functions over what it recorded: the workers' view
of every lease, heartbeat and receipt (`WireLog`), the jobs and schedule fires in the
database, and which enqueues were acknowledged. Each returns a list of violations (empty:
the promise held).

Times on the workers' side are monotonic seconds of the one process the workers run in; a
lease's expiry (the coordinator's wall time) is turned into that clock when it is seen.

"No job is ever held by two valid leases at once" is checked without trusting the
coordinator's bookkeeping. A lease is certainly valid throughout [seen, end), where `seen` is
when the worker got it (the grant came before) and `end` is the earliest moment it can have
stopped being valid:
  - it ended with an accepted receipt: when that receipt was first sent (it was accepted at
    or after that moment, and the lease was valid up to then or the receipt would have been
    refused);
  - otherwise: its expiry as last reported (the lease reply or an accepted heartbeat), less
    EXPIRY_MARGIN for the two clocks; and at least until the last report the coordinator
    accepted was sent.
Two leases of one job whose certain intervals overlap were both valid at one moment."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Slack for turning the coordinator's wall-clock expiry into the workers' monotonic clock.
EXPIRY_MARGIN = 0.5
SUCCEEDED = 4  # JobState.SUCCEEDED in the jobs table
FINISHED = (4, 5, 6)
MICROS: int = 1_000_000


@dataclass(frozen=True, slots=True)
class LeaseSeen:
    job_id: str
    token: str
    attempt: int
    seen: float  # when the Lease reply reached the worker
    expires: float  # the expiry it carried, on the same clock
    worker: str


@dataclass(frozen=True, slots=True)
class ReportSeen:
    """One heartbeat or receipt item and the coordinator's answer to it."""

    kind: str  # "heartbeat" or "receipt"
    job_id: str
    token: str
    sent: float
    code: str  # "OK", a refusal (FAILED_PRECONDITION, ...), or "transport:<CODE>"
    outcome: int = 0  # receipts: the Outcome enum number (1 = SUCCESS)
    expires: float | None = None  # accepted heartbeats: the new expiry


@dataclass
class WireLog:
    """Append-only: every lease the workers got and every report they sent."""

    leases: list[LeaseSeen] = field(default_factory=list)
    reports: list[ReportSeen] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    queue: str
    state: int
    lease_token: str | None


OUTCOME_SUCCESS = 1


def certain_intervals(log: WireLog) -> dict[str, list[tuple[float, float, str]]]:
    """Per job: (start, end, token) of each lease's certain validity (see the module doc)."""
    reports: dict[str, list[ReportSeen]] = defaultdict(list)
    for report in log.reports:
        reports[report.token].append(report)
    intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for lease in log.leases:
        mine = sorted(reports.get(lease.token, []), key=lambda r: r.sent)
        accepted = [r for r in mine if r.code == "OK"]
        receipts = [r for r in mine if r.kind == "receipt"]
        ending = next((r for r in accepted if r.kind == "receipt"), None)
        if ending is not None:
            # The receipt the coordinator accepted may have been accepted on its first try.
            same = [r for r in receipts if r.outcome == ending.outcome]
            end = min(r.sent for r in same)
        else:
            expiry = max(
                [lease.expires]
                + [r.expires for r in accepted if r.kind == "heartbeat" and r.expires is not None]
            )
            end = max([expiry - EXPIRY_MARGIN] + [r.sent for r in accepted])
        intervals[lease.job_id].append((lease.seen, end, lease.token))
    return intervals


def double_leases(log: WireLog) -> list[str]:
    violations = []
    for job_id, spans in certain_intervals(log).items():
        spans = sorted(s for s in spans if s[1] > s[0])
        for i, (start, end, token) in enumerate(spans):
            for other_start, other_end, other in spans[i + 1 :]:
                if other_start >= end:
                    break
                if token != other:
                    violations.append(
                        f"job {job_id}: leases {token[:8]} [{start:.3f}, {end:.3f}) and "
                        f"{other[:8]} [{other_start:.3f}, {other_end:.3f}) were both valid"
                    )
    return violations


def one_success_each(log: WireLog, jobs: Iterable[JobRow]) -> list[str]:
    """Every job SUCCEEDED, by exactly one lease whose success receipt was accepted, and the
    database names that lease."""
    accepted: dict[str, set[str]] = defaultdict(set)
    for r in log.reports:
        if r.kind == "receipt" and r.code == "OK" and r.outcome == OUTCOME_SUCCESS:
            accepted[r.job_id].add(r.token)
    violations = []
    for job in jobs:
        tokens = accepted.get(job.job_id, set())
        if job.state != SUCCEEDED:
            violations.append(f"job {job.job_id} ({job.queue}) ended in state {job.state}")
        elif len(tokens) != 1:
            violations.append(
                f"job {job.job_id} ({job.queue}): {len(tokens)} leases had a success accepted"
            )
        elif job.lease_token not in tokens:
            violations.append(f"job {job.job_id}: the database names another lease's success")
    return violations


def nothing_lost(acknowledged: Mapping[str, str], jobs: Mapping[str, JobRow]) -> list[str]:
    """Every acknowledged enqueue (idempotency key -> job id) is a job that succeeded."""
    violations = []
    for key, job_id in acknowledged.items():
        job = jobs.get(job_id)
        if job is None:
            violations.append(f"acknowledged job {job_id} (key {key}) is not in the database")
        elif job.state != SUCCEEDED:
            violations.append(f"acknowledged job {job_id} (key {key}) ended in state {job.state}")
    return violations


def fires_once(
    first_fire: int,
    covered_until: int,
    period: int,
    fires: Sequence[tuple[int, str | None]],
    cron_jobs: Iterable[str],
) -> list[str]:
    """A schedule with the catch-up misfire policy and overlap allowed fired every period
    from `first_fire` through `covered_until` (microseconds) exactly once, each fire enqueued
    one job, and the schedule's queue holds exactly those jobs."""
    violations = []
    times = [at for at, _ in fires]
    if len(set(times)) != len(times):
        violations.append("a fire time was recorded twice")
    expected = list(range(first_fire, covered_until + 1, period))
    seen = set(times)
    missing = [at for at in expected if at not in seen]
    if missing:
        violations.append(f"{len(missing)} fires missing, the first at {missing[0]}")
    extra = sorted(at for at in seen if at < first_fire or (at - first_fire) % period)
    if extra:
        violations.append(f"{len(extra)} fires at times the cron does not name: {extra[:3]}")
    without_job = [at for at, job in fires if job is None]
    if without_job:
        violations.append(
            f"{len(without_job)} fires enqueued no job, the first at {without_job[0]}"
        )
    fired_jobs = [job for _, job in fires if job is not None]
    if len(set(fired_jobs)) != len(fired_jobs):
        violations.append("one job was recorded for two fires")
    queued = list(cron_jobs)
    if sorted(queued) != sorted(fired_jobs):
        violations.append(
            f"the schedule's queue holds {len(queued)} jobs for {len(fired_jobs)} fires "
            f"({len(set(queued) - set(fired_jobs))} without a fire)"
        )
    return violations
