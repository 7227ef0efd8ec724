"""Queue settings, flow control and statistics, on an open connection inside the writer's
transaction. Limits live in the database, not in process memory, so that they hold for
several coordinators sharing one database."""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from conveyor_server.core import throttle
from conveyor_server.core.model import (
    JobSettings,
    JobState,
    LeaseParams,
    Micros,
    QueueConfig,
    QueueStats,
    RateLimit,
    Retention,
    RetryOverrides,
)
from conveyor_server.core.push import PushConfig
from conveyor_server.store import contracts as contracts_sql
from conveyor_server.store import counts as counts_sql
from conveyor_server.store import dialects
from conveyor_server.store.prepared import Batch, Prepared, execute_together
from conveyor_server.store.schema import jobs, queues, throttle_buckets

log = structlog.get_logger("conveyor.store")

# Exhausted per-key buckets excluded in SQL at most; beyond that, the scan skips them.
_MAX_EXCLUDED_KEYS = 500
# How many candidates a lease scans per job wanted, when per-key limits may skip some.
_KEYED_SCAN_FACTOR = 4
# Errors that come from one row's values (arithmetic on an absurd rate, say), not from the
# database; they leave the transaction usable, so the other queues go on.
_ROW_FAULTS = (ArithmeticError, ValueError, TypeError)
_ERROR_PREFIX = 200

_NEW_QUEUE_DEFAULTS = {
    "paused": False,
    "max_concurrency": 0,
    "window_start": 0,
    "window_count": 0,
    "previous_window_count": 0,
    "strict_task_types": False,
}

_RECORD_DISPATCH = Prepared(
    sa.update(queues)
    .where(queues.c.name == sa.bindparam("b_name"))
    .values(
        tokens=sa.bindparam("b_tokens", type_=sa.Float),
        tokens_at=sa.bindparam("b_now", type_=sa.BigInteger),
        window_start=sa.bindparam("b_window_start"),
        window_count=sa.bindparam("b_window_count"),
        previous_window_count=sa.bindparam("b_previous"),
    )
)


def ensure_queues(conn: Connection, names: Iterable[str], now: Micros) -> None:
    """A queue exists as soon as something names it."""
    rows = [{"name": name, "created_at": now, **_NEW_QUEUE_DEFAULTS} for name in sorted(set(names))]
    if rows:
        conn.execute(dialects.insert_ignoring_existing(conn.dialect, queues), rows)


def queue_rows(conn: Connection, names: Sequence[str], *, lock: bool = False) -> dict[str, Any]:
    """Queue rows by name; `lock` locks them (PostgreSQL), in name order so that two
    coordinators locking overlapping queues cannot deadlock."""
    query = sa.select(queues).where(queues.c.name.in_(sorted(set(names)))).order_by(queues.c.name)
    if lock:
        query = dialects.lock_rows(conn.dialect, query)
    return {row.name: row for row in conn.execute(query)}


def _limited(row: Any) -> bool:
    return bool(row.max_concurrency or row.rate or row.key_rate)


def _dispatch_rows(conn: Connection, names: Sequence[str]) -> dict[str, Any]:
    """The queues a Lease reads. A queue with a concurrency cap or token buckets is read
    again with its row locked (PostgreSQL: FOR UPDATE, which also returns the newest
    committed settings), so that claims on it from several coordinators take turns and its
    count of leased jobs and its buckets stay exact; queues without limits are not locked,
    and claims on them run side by side (SKIP LOCKED on the jobs)."""
    rows = queue_rows(conn, names)
    if conn.dialect.name == "postgresql":
        limited = [name for name, row in rows.items() if _limited(row)]
        if limited:
            rows.update(queue_rows(conn, limited, lock=True))
    return rows


class JobDefaults:
    """Each queue's settings for new jobs (defaults, strictness), remembered for a second so
    that enqueues do not read the queues table every time; UpdateQueue in this process
    forgets at once, and another coordinator's change is seen within the second.

    What a transaction learns (including "this queue's row exists", which it may have just
    inserted) stays pending until the writer commits it and is dropped if it rolls back: a
    remembered queue whose row was rolled back would let later jobs into a queue with no
    row (issue 7, item 1)."""

    TTL_SECONDS = 1.0

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, QueueConfig]] = {}
        self._pending: dict[str, tuple[float, QueueConfig]] = {}

    def forget(self, name: str) -> None:
        self._known.pop(name, None)
        self._pending.pop(name, None)

    def committed(self) -> None:
        """The writer committed: what the transaction learned is now true for everyone."""
        if self._pending:
            self._known.update(self._pending)
            self._pending.clear()

    def rolled_back(self) -> None:
        self._pending.clear()

    def _cached(self, name: str, clock: float) -> QueueConfig | None:
        entry = self._pending.get(name) or self._known.get(name)
        return entry[1] if entry is not None and entry[0] > clock else None

    def get(self, conn: Connection, names: set[str], now: Micros) -> dict[str, QueueConfig]:
        clock = time.monotonic()
        found = {n: c for n in names if (c := self._cached(n, clock)) is not None}
        missing = names - found.keys()
        if missing:
            rows = queue_rows(conn, list(missing))
            if missing - rows.keys():
                ensure_queues(conn, missing - rows.keys(), now)
                rows.update(queue_rows(conn, list(missing - rows.keys())))
            for name, row in rows.items():
                found[name] = queue_config(row)
                self._pending[name] = (clock + self.TTL_SECONDS, found[name])
        return found


def ensure_rows_for_jobs(conn: Connection, now: Micros) -> list[str]:
    """Creates the missing row of every queue that holds jobs, with default settings, and
    returns their names. Older versions could commit jobs into a queue whose row a
    rolled-back transaction had created (issue 7, item 1); this repairs such databases."""
    orphaned = sorted(
        name
        for (name,) in conn.execute(
            sa.select(jobs.c.queue).distinct().where(jobs.c.queue.not_in(sa.select(queues.c.name)))
        )
    )
    ensure_queues(conn, orphaned, now)
    return orphaned


def _limit(rate: float | None, burst: int | None) -> RateLimit | None:
    if not rate or not burst:
        return None
    return RateLimit(rate=rate, burst=burst)


def queue_config(row: Any) -> QueueConfig:
    return QueueConfig(
        name=row.name,
        paused=bool(row.paused),
        rate_limit=_limit(row.rate, row.burst),
        per_key_rate_limit=_limit(row.key_rate, row.key_burst),
        max_concurrency=row.max_concurrency,
        defaults=JobSettings(
            max_attempts=row.default_max_attempts,
            lease_duration=row.default_lease_duration,
            retry=RetryOverrides(
                initial_backoff=row.default_retry_initial_backoff,
                multiplier=row.default_retry_multiplier,
                max_backoff=row.default_retry_max_backoff,
                jitter=row.default_retry_jitter,
            ),
        ),
        retention=Retention(
            succeeded=row.retain_succeeded,
            failed=row.retain_failed,
            cancelled=row.retain_cancelled,
        ),
        strict_task_types=bool(row.strict_task_types),
        push=PushConfig.from_bytes(row.push_target) if row.push_target is not None else None,
    )


def queue_values(config: QueueConfig) -> dict[str, Any]:
    """The settable columns of a queue row."""
    rate, key_rate = config.rate_limit, config.per_key_rate_limit
    return {
        "paused": config.paused,
        "rate": rate.rate if rate else None,
        "burst": rate.burst if rate else None,
        "key_rate": key_rate.rate if key_rate else None,
        "key_burst": key_rate.burst if key_rate else None,
        "max_concurrency": config.max_concurrency,
        "default_max_attempts": config.defaults.max_attempts,
        "default_lease_duration": config.defaults.lease_duration,
        "default_retry_initial_backoff": config.defaults.retry.initial_backoff,
        "default_retry_multiplier": config.defaults.retry.multiplier,
        "default_retry_max_backoff": config.defaults.retry.max_backoff,
        "default_retry_jitter": config.defaults.retry.jitter,
        "retain_succeeded": config.retention.succeeded,
        "retain_failed": config.retention.failed,
        "retain_cancelled": config.retention.cancelled,
        "strict_task_types": config.strict_task_types,
        "push_target": config.push.to_bytes() if config.push is not None else None,
    }


# -- dispatch ----------------------------------------------------------------------------------


@dataclass
class _QueuePlan:
    """What one queue may hand out in this lease, and the bucket state it started from."""

    name: str
    row: Any
    # Only jobs the leasing worker implements, one clause per task type (None: any job).
    runnable: list[sa.ColumnElement[bool]] | None = None
    queue_tokens: float | None = None
    key_tokens: dict[str, float] = field(default_factory=dict)
    candidates: list[tuple[int, int, str, tuple[str, str | None]]] = field(default_factory=list)


@dataclass
class DispatchPlan:
    chosen: list[str]
    retry_at: Micros | None
    plans: list[_QueuePlan]
    keys_by_job: dict[str, tuple[str, str | None]]
    dry_until: dict[str, Micros]


def plan_dispatch(conn: Connection, params: LeaseParams) -> DispatchPlan:
    """Picks the jobs a Lease may take: per queue, within its pause, concurrency cap and
    token buckets; across queues, by priority and due time."""
    rows = _dispatch_rows(conn, params.queues)
    plans: list[_QueuePlan] = []
    retry_ats: list[Micros] = []
    limited: list[_QueuePlan] = []
    runnable = contracts_sql.runnable_by_type(params.task_types) if params.task_types else None
    for name in params.queues:
        # A queue that holds jobs but has no row (a database written by an older version)
        # is dispatched with default settings rather than never.
        row = rows.get(name) or _default_row(name)
        if row.paused:
            continue
        plan = _QueuePlan(name=name, row=row, runnable=runnable)
        queue_retry_ats: list[Micros] = []
        try:
            allowance = _allowance(conn, plan, params, queue_retry_ats)
            if allowance > 0:
                _pick_candidates(conn, plan, allowance, params.now, queue_retry_ats)
        except _ROW_FAULTS as exc:
            # One queue's bad settings must not fail a Lease that names healthy queues too.
            log.error("queue.dispatch_skipped", queue=name, error=_short(exc))
            continue
        retry_ats.extend(queue_retry_ats)
        if plan.queue_tokens is not None:
            limited.append(plan)
        if allowance > 0:
            plans.append(plan)
    merged = heapq.merge(*(p.candidates for p in plans))
    chosen: list[str] = []
    keys_by_job: dict[str, tuple[str, str | None]] = {}
    for _priority, _run_at, job_id, queue_and_key in _take(merged, params.max_jobs):
        chosen.append(job_id)
        keys_by_job[job_id] = queue_and_key
    return DispatchPlan(
        chosen=chosen,
        retry_at=min(retry_ats) if retry_ats and len(chosen) < params.max_jobs else None,
        plans=plans,
        keys_by_job=keys_by_job,
        dry_until=_dry_after(limited, keys_by_job, params.now),
    )


def _dry_after(
    limited: list[_QueuePlan], keys_by_job: dict[str, tuple[str, str | None]], now: Micros
) -> dict[str, Micros]:
    """The queues left without a whole token once the chosen jobs take theirs, with the time
    of each one's next token."""
    taken = Counter(queue for queue, _key in keys_by_job.values())
    dry: dict[str, Micros] = {}
    for plan in limited:
        limit = _limit(plan.row.rate, plan.row.burst)
        assert limit is not None and plan.queue_tokens is not None
        left = max(0.0, plan.queue_tokens - taken[plan.name])
        if throttle.whole_tokens(left) < 1:
            try:
                dry[plan.name] = throttle.next_token_at(limit, left, now)
            except _ROW_FAULTS as exc:
                log.error("queue.dispatch_skipped", queue=plan.name, error=_short(exc))
    return dry


def _default_row(name: str) -> Any:
    """What a queue row holds when nothing has configured the queue."""
    values: dict[str, Any] = {column.name: None for column in queues.c}
    return SimpleNamespace(**{**values, **_NEW_QUEUE_DEFAULTS, "name": name, "created_at": 0})


def _short(exc: BaseException) -> str:
    """An error for a log line: its type and a short prefix, never a whole value."""
    return f"{type(exc).__name__}: {str(exc)[:_ERROR_PREFIX]}"


def _take(merged: Iterable[Any], count: int) -> list[Any]:
    taken: list[Any] = []
    for item in merged:
        if len(taken) >= count:
            break
        taken.append(item)
    return taken


def _allowance(
    conn: Connection, plan: _QueuePlan, params: LeaseParams, retry_ats: list[Micros]
) -> int:
    row = plan.row
    allowance = params.max_jobs
    if row.max_concurrency:
        leased = conn.scalar(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.queue == plan.name, jobs.c.state == JobState.LEASED)
        )
        # A slot frees with a receipt or an expiry, which wakes the long-polls itself.
        allowance = min(allowance, row.max_concurrency - int(leased or 0))
    limit = _limit(row.rate, row.burst)
    if limit is not None:
        plan.queue_tokens = throttle.tokens_now(limit, row.tokens, row.tokens_at, params.now)
        whole = throttle.whole_tokens(plan.queue_tokens)
        if whole < allowance:
            allowance = whole
            retry_ats.append(throttle.next_token_at(limit, plan.queue_tokens % 1.0, params.now))
    return allowance


def _pick_candidates(
    conn: Connection, plan: _QueuePlan, allowance: int, now: Micros, retry_ats: list[Micros]
) -> None:
    key_limit = _limit(plan.row.key_rate, plan.row.key_burst)
    if key_limit is None:
        rows = _candidate_rows(conn, plan, allowance)
        plan.candidates = [(-r.priority, r.run_at, r.id, (plan.name, None)) for r in rows]
        return
    buckets = conn.execute(
        sa.select(
            throttle_buckets.c.throttle_key,
            throttle_buckets.c.tokens,
            throttle_buckets.c.updated_at,
        ).where(throttle_buckets.c.queue == plan.name, throttle_buckets.c.tokens < key_limit.burst)
    )
    exhausted: list[str] = []
    for key, tokens, updated_at in buckets:
        level = throttle.tokens_now(key_limit, tokens, updated_at, now)
        plan.key_tokens[key] = level
        if throttle.whole_tokens(level) < 1:
            exhausted.append(key)
            retry_ats.append(throttle.next_token_at(key_limit, level, now))
    scan = min(allowance * _KEYED_SCAN_FACTOR, 1000)
    taken: Counter[str] = Counter()
    for row in _candidate_rows(conn, plan, scan, exhausted[:_MAX_EXCLUDED_KEYS]):
        if len(plan.candidates) >= allowance:
            break
        key = row.throttle_key
        if key is not None:
            available = throttle.whole_tokens(plan.key_tokens.get(key, float(key_limit.burst)))
            if taken[key] >= available:
                continue
            taken[key] += 1
        plan.candidates.append((-row.priority, row.run_at, row.id, (plan.name, key)))


def _candidate_rows(
    conn: Connection, plan: _QueuePlan, limit: int, skip_keys: Sequence[str] = ()
) -> list[Any]:
    """The queue's next `limit` runnable jobs in dispatch order. A worker's task types are
    looked up one by one, each on the (queue, task_type) index, then merged: one query for all
    would walk past every job of other types at the head of the queue."""
    if plan.runnable is None:
        return list(
            conn.execute(dialects.dispatch_candidates(conn.dialect, plan.name, limit, skip_keys))
        )
    rows = [
        row
        for clause in plan.runnable
        for row in conn.execute(
            dialects.dispatch_candidates(conn.dialect, plan.name, limit, skip_keys, clause)
        )
    ]
    if len(plan.runnable) > 1:
        rows.sort(key=lambda r: (-r.priority, r.run_at, r.id))
    return rows[:limit]


def record_dispatch(conn: Connection, plan: DispatchPlan, now: Micros) -> None:
    """Takes the tokens of the jobs leased and counts them for the dispatch rate."""
    execute_together(conn, dispatch_writes(conn, plan, now))


def dispatch_writes(conn: Connection, plan: DispatchPlan, now: Micros) -> list[Batch]:
    """What record_dispatch writes, as statements and their rows, for a caller that sends
    them together with its own (jobs_sql.claim)."""
    per_queue: Counter[str] = Counter()
    per_key: Counter[tuple[str, str]] = Counter()
    for queue, key in plan.keys_by_job.values():
        per_queue[queue] += 1
        if key is not None:
            per_key[(queue, key)] += 1
    updates = []
    bucket_rows = []
    for queue_plan in plan.plans:
        taken = per_queue[queue_plan.name]
        if not taken:
            continue
        row = queue_plan.row
        start, count, previous = throttle.roll_window(
            row.window_start, row.window_count, row.previous_window_count, now
        )
        tokens = queue_plan.queue_tokens - taken if queue_plan.queue_tokens is not None else None
        updates.append(
            {
                "b_name": queue_plan.name,
                "b_tokens": tokens,
                "b_now": now if tokens is not None else None,
                "b_window_start": start,
                "b_window_count": count + taken,
                "b_previous": previous,
            }
        )
        key_limit = _limit(row.key_rate, row.key_burst)
        if key_limit is not None:
            for (queue, key), used in per_key.items():
                if queue == queue_plan.name:
                    level = queue_plan.key_tokens.get(key, float(key_limit.burst))
                    bucket_rows.append(
                        {
                            "queue": queue,
                            "throttle_key": key,
                            "tokens": level - used,
                            "updated_at": now,
                        }
                    )
    return [(_RECORD_DISPATCH, updates), (dialects.upsert_buckets(conn.dialect), bucket_rows)]


def forget_full_buckets(conn: Connection, config: QueueConfig, now: Micros) -> None:
    """A bucket that has refilled is the same as no bucket, so its row can go."""
    limit = config.per_key_rate_limit
    query = sa.delete(throttle_buckets).where(throttle_buckets.c.queue == config.name)
    if limit is not None:
        query = query.where(throttle_buckets.c.updated_at < now - throttle.refill_time(limit))
    conn.execute(query)


# -- statistics --------------------------------------------------------------------------------


def queue_stats(conn: Connection, row: Any, now: Micros) -> QueueStats:
    counts = counts_sql.by_state(conn, row.name)
    oldest = oldest_available(conn, row.name) if counts.get(JobState.AVAILABLE) else None
    available = counts.get(JobState.AVAILABLE, 0) > 0
    config = queue_config(row)
    rate_held = False
    if config.rate_limit is not None:
        tokens = throttle.tokens_now(config.rate_limit, row.tokens, row.tokens_at, now)
        rate_held = available and throttle.whole_tokens(tokens) < 1
    cap_held = (
        available
        and config.max_concurrency > 0
        and counts.get(JobState.LEASED, 0) >= config.max_concurrency
    )
    return QueueStats(
        counts=counts,
        oldest_available_age=max(0, now - oldest) if oldest is not None else None,
        dispatch_rate=throttle.dispatch_rate(
            row.window_start, row.window_count, row.previous_window_count, now
        ),
        held_by_rate_limit=rate_held,
        held_by_concurrency_limit=cap_held,
        held_by_pause=available and config.paused,
        awaiting_compatible_worker=(
            contracts_sql.awaiting_compatible_worker(conn, row.name, now) if available else 0
        ),
    )


# Distinct priorities among a queue's available jobs that oldest_available seeks one by one
# before it falls back to one scan of them all.
_MAX_PRIORITY_SEEKS = 32


def oldest_available(conn: Connection, queue: str) -> Micros | None:
    """The earliest due time among the queue's available jobs, without reading them all:
    ix_jobs_dispatch is ordered by (queue, priority desc, run_at), so the first entry of each
    priority is that priority's oldest job. One index seek per distinct priority (a skip
    scan); few queues use more than a handful of priorities."""
    base = sa.select(jobs.c.priority, jobs.c.run_at).where(
        jobs.c.queue == queue, jobs.c.state == JobState.AVAILABLE
    )
    ordered = base.order_by(jobs.c.priority.desc(), jobs.c.run_at).limit(1)
    oldest: Micros | None = None
    head = conn.execute(ordered).first()
    for _ in range(_MAX_PRIORITY_SEEKS):
        if head is None:
            return oldest
        oldest = head.run_at if oldest is None else min(oldest, head.run_at)
        head = conn.execute(ordered.where(jobs.c.priority < head.priority)).first()
    if head is None:
        return oldest
    rest = conn.scalar(
        sa.select(sa.func.min(jobs.c.run_at)).where(
            jobs.c.queue == queue,
            jobs.c.state == JobState.AVAILABLE,
            jobs.c.priority <= head.priority,
        )
    )
    return oldest if rest is None else min(oldest or rest, rest)
