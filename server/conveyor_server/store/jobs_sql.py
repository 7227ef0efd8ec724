"""The job statements of the SQL store: enqueue, claim, heartbeat, receipts, lease rescue,
promotion, cancel and retry, and the job reads. Plain functions of a Connection, run whole in
a database thread (store/threads.py); the decisions come from core (core/rules.py,
core/lifecycle.py), the SQL is here.

Several coordinators may share one PostgreSQL database, so no function trusts a read it made
earlier: fencing reads lock their rows (dialects.lock_rows), claims skip rows locked by
others, and every UPDATE states the state it expects in its WHERE clause."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from random import Random
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Dialect

from conveyor_server.core.model import (
    DueTimes,
    EnqueueResult,
    HeartbeatParams,
    HeartbeatResult,
    Job,
    JobPage,
    JobState,
    LeaseBatch,
    LeasedJob,
    LeaseParams,
    ListJobsParams,
    Micros,
    NewJob,
    QueueConfig,
    ReceiptParams,
    ReplyLimit,
    TransitionResult,
    fit_in_reply,
    listed_job_size,
    resolve_settings,
)
from conveyor_server.core.ports import ExpiryDecider, Isolated, Processed, ReceiptDecider
from conveyor_server.core.rules import (
    CancelStep,
    cancel_step,
    check_retryable,
    child_depth,
    strict_refusal,
)
from conveyor_server.errors import ConveyorError, FailedPrecondition, NotFound
from conveyor_server.store import contracts as contracts_sql
from conveyor_server.store import counts, dialects
from conveyor_server.store import queues as queues_sql
from conveyor_server.store.blobs import BlobCodec, BlobUnreadable, codec_of
from conveyor_server.store.contracts import WorkerDeclarations
from conveyor_server.store.isolation import Forget, isolating, reason_of
from conveyor_server.store.prepared import Prepared, constant, execute_together
from conveyor_server.store.queues import JobDefaults
from conveyor_server.store.rows import (
    as_replay,
    attempt_from_row,
    chunks,
    claimed_job,
    conflicting_receipt,
    fencing_problem,
    fresh_result,
    history_row,
    job_from_row,
    job_row,
    keyed_outcome,
    lease_holder,
    lease_tokens,
    leased_job_size,
    receipt_digest,
    repeated_receipt,
    transition_params,
    transition_result,
)
from conveyor_server.store.schema import job_attempts, jobs

log = structlog.get_logger("conveyor.store")

# The error_type of a job the reaper had to set aside (see fail_unrescuable).
ISOLATED_ERROR_TYPE = "conveyor.Isolated"

# Rows a size-limited lease reads before it knows whether the reply is full.
_FIRST_READ_STEP = 64

JOB_COLUMNS = list(jobs.c)
HOLDER_COLUMNS = [
    jobs.c.id,
    jobs.c.queue,
    jobs.c.task_type,
    jobs.c.state,
    jobs.c.run_at,
    jobs.c.lease_token,
    jobs.c.lease_expires_at,
    jobs.c.lease_duration,
    jobs.c.attempt,
    jobs.c.max_attempts,
    jobs.c.retry_initial_backoff,
    jobs.c.retry_multiplier,
    jobs.c.retry_max_backoff,
    jobs.c.retry_jitter,
    jobs.c.leased_by,
    jobs.c.leased_at,
    jobs.c.cancel_requested,
    jobs.c.receipt_digest,
    jobs.c.lease_unconfirmed,
]


def state_still(state: JobState) -> sa.ColumnElement[bool]:
    """`state = s`, for a statement that finds its row by id and states the state it expects.
    Written `state + 0 = s` so that the planner cannot answer it from one of the partial
    indexes on state (`WHERE state = s`): on a young jobs table PostgreSQL costed a full scan
    of such an index (ix_jobs_leased_queue, ix_jobs_dispatch_type) about the same as the
    primary-key probe, took it, and kept it in the prepared statement's cached plan as the
    table grew: every claim, heartbeat and receipt then read all leased jobs, half the
    end-to-end time (issue 9; tests/store/test_lookup_plans.py). SQLite reads `+ 0` the same
    way (no index on that term)."""
    still: sa.ColumnElement[bool] = (jobs.c.state + constant(0)) == constant(state)
    return still


# NULL for an ordinary lease (the CASE then keeps lease_duration); cast, as PostgreSQL cannot
# tell a bare parameter's type when it is NULL.
_WINDOW = sa.cast(sa.bindparam("b_window", type_=sa.BigInteger), sa.BigInteger)

_CLAIM = Prepared(
    sa.update(jobs)
    .where(jobs.c.id == sa.bindparam("b_id"), state_still(JobState.AVAILABLE))
    .values(
        state=constant(JobState.LEASED),
        attempt=jobs.c.attempt + constant(1),
        lease_token=sa.bindparam("b_token"),
        leased_by=sa.bindparam("b_worker"),
        leased_at=sa.bindparam("b_now"),
        # Lease confirmation: a lease taken with confirm_within (b_window) runs only that long,
        # unless the job's own lease_duration is shorter, until a heartbeat confirms it.
        lease_expires_at=sa.case(
            (jobs.c.lease_duration > _WINDOW, _WINDOW), else_=jobs.c.lease_duration
        )
        + sa.bindparam("b_now"),
        lease_unconfirmed=sa.bindparam("b_unconfirmed", type_=sa.Boolean),
    )
)

_FENCED = sa.and_(
    jobs.c.id == sa.bindparam("b_id"),
    jobs.c.lease_token == sa.bindparam("b_token"),
    state_still(JobState.LEASED),
)

_EXTEND = Prepared(
    sa.update(jobs)
    .where(_FENCED)
    .values(
        lease_expires_at=sa.bindparam("b_expires"),
        lease_unconfirmed=sa.false(),  # any heartbeat confirms a lease
        checkpoint=sa.func.coalesce(
            sa.bindparam("b_checkpoint", type_=sa.LargeBinary), jobs.c.checkpoint
        ),
    )
)

_TRANSITION_VALUES: dict[str, Any] = {
    "state": sa.bindparam("b_state"),
    "run_at": sa.func.coalesce(sa.bindparam("b_run_at", type_=sa.BigInteger), jobs.c.run_at),
    "attempt": jobs.c.attempt + sa.bindparam("b_attempt_delta"),
    "result": sa.bindparam("b_result", type_=sa.LargeBinary),
    "error_message": sa.bindparam("b_error_message", type_=sa.Text),
    "error_type": sa.bindparam("b_error_type", type_=sa.String),
    "error_non_retryable": sa.bindparam("b_error_non_retryable", type_=sa.Boolean),
    "finished_at": sa.bindparam("b_finished_at", type_=sa.BigInteger),
    "lease_expires_at": sa.null(),
    "lease_token": sa.bindparam("b_new_token", type_=sa.String),
    "receipt_digest": sa.bindparam("b_receipt_digest", type_=sa.String),
    "lease_unconfirmed": sa.false(),
}

_APPLY_TRANSITION = Prepared(sa.update(jobs).where(_FENCED).values(**_TRANSITION_VALUES))
_RECORD_ATTEMPT = Prepared(
    sa.insert(job_attempts).values(
        {c.name: sa.bindparam(c.name) for c in job_attempts.c if c.name != "id"}
    )
)


def insert_atomic(
    conn: Connection, new_jobs: Sequence[NewJob], max_depth: int, defaults: JobDefaults
) -> list[EnqueueResult | ConveyorError] | ConveyorError:
    """All or none: any refused job undoes the batch's inserts and is the error."""
    outcomes = insert_jobs(conn, new_jobs, max_depth, defaults)
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, ConveyorError):
            inserted = [
                o.job_id for o in outcomes if isinstance(o, EnqueueResult) and not o.deduplicated
            ]
            for chunk in chunks(inserted):
                undone = conn.execute(
                    sa.delete(jobs)
                    .where(jobs.c.id.in_(chunk))
                    .returning(jobs.c.queue, jobs.c.task_type, jobs.c.state)
                )
                counts.removed_rows(conn, undone)
            return type(outcome)(f"jobs[{index}]: {outcome}; no job of the batch was stored")
    return outcomes


def insert_jobs(
    conn: Connection, new_jobs: Sequence[NewJob], max_depth: int, defaults: JobDefaults
) -> list[EnqueueResult | ConveyorError]:
    """Each job judged on its own; a key already taken answers with its holder."""
    depths = child_depths(conn, new_jobs, max_depth)
    configs = defaults.get(conn, {j.queue for j in new_jobs}, new_jobs[0].created_at)
    depths = refuse_unregistered(conn, new_jobs, configs, depths)
    blobs = codec_of(conn)
    rows = [
        job_row(job, depth, resolve_settings(job.settings, configs[job.queue].defaults), blobs)
        for job, depth in zip(new_jobs, depths, strict=True)
        if not isinstance(depth, ConveyorError)
    ]
    if rows:
        dialects.insert_ignoring_duplicate_keys(conn.dialect).executemany(conn, rows)
    keyed = [
        j for j, d in zip(new_jobs, depths, strict=True) if j.idempotency_key and isinstance(d, int)
    ]
    holders = key_holders(conn, keyed)
    outcomes: list[EnqueueResult | ConveyorError] = []
    for job, depth in zip(new_jobs, depths, strict=True):
        if isinstance(depth, ConveyorError):
            outcomes.append(depth)
        elif job.idempotency_key:
            holder = holders[(job.queue, job.idempotency_key)]
            outcomes.append(keyed_outcome(job, holder, blobs))
        else:
            outcomes.append(fresh_result(job))
    stored = Counter(
        (o.queue, o.task_type, o.state)
        for o in outcomes
        if isinstance(o, EnqueueResult) and not o.deduplicated
    )
    for (queue, task_type, state), n in stored.items():
        counts.added(conn, queue, task_type, state, n)
    return outcomes


def refuse_unregistered(
    conn: Connection,
    new_jobs: Sequence[NewJob],
    configs: dict[str, QueueConfig],
    depths: list[int | ConveyorError],
) -> list[int | ConveyorError]:
    """In a strict queue every job names a registered task type version."""
    strict = [configs[j.queue].strict_task_types for j in new_jobs]
    if not any(strict):
        return depths
    wanted = {
        (j.task_type, j.task_version)
        for j, s in zip(new_jobs, strict, strict=True)
        if s and j.task_version is not None
    }
    known = contracts_sql.registered(conn, wanted)
    checked: list[int | ConveyorError] = []
    for job, is_strict, depth in zip(new_jobs, strict, depths, strict=True):
        refusal = (
            None if isinstance(depth, ConveyorError) else strict_refusal(job, is_strict, known)
        )
        checked.append(refusal or depth)
    return checked


def child_depths(
    conn: Connection, new_jobs: Sequence[NewJob], max_depth: int
) -> list[int | ConveyorError]:
    parent_ids = sorted({j.parent_job_id for j in new_jobs if j.parent_job_id})
    parent_depth: dict[str, int] = {}
    for chunk in chunks(parent_ids):
        result = conn.execute(sa.select(jobs.c.id, jobs.c.depth).where(jobs.c.id.in_(chunk)))
        parent_depth.update({row.id: row.depth for row in result})
    return [child_depth(j, parent_depth.get(j.parent_job_id or ""), max_depth) for j in new_jobs]


def key_holders(conn: Connection, keyed: Sequence[NewJob]) -> dict[tuple[str, str], Any]:
    keys = sorted({j.idempotency_key for j in keyed if j.idempotency_key})
    holders: dict[tuple[str, str], Any] = {}
    for chunk in chunks(keys):
        result = conn.execute(
            sa.select(
                jobs.c.id,
                jobs.c.queue,
                jobs.c.idempotency_key,
                jobs.c.task_type,
                jobs.c.payload,
                jobs.c.state,
                jobs.c.run_at,
            ).where(jobs.c.idempotency_key.in_(chunk))
        )
        for row in result:
            holders[(row.queue, row.idempotency_key)] = row
    return holders


def claim(conn: Connection, params: LeaseParams, declarations: WorkerDeclarations) -> LeaseBatch:
    declarations.record(conn, params)
    plan = queues_sql.plan_dispatch(conn, params)
    rows, left_behind = rows_that_fit(conn, plan, params.reply_limit)
    tokens = lease_tokens(plan.chosen)
    # Built from the rows read before the claim, with what _CLAIM sets: no second read.
    leased = readable_jobs(plan, rows, tokens, params, codec_of(conn))
    chosen = plan.chosen
    if not chosen:
        return LeaseBatch(
            jobs=[], retry_at=plan.retry_at, dry_until=plan.dry_until, left_behind=left_behind
        )
    claims = [
        {
            "b_id": job_id,
            "b_token": tokens[job_id],
            "b_worker": params.worker_id,
            "b_now": params.now,
            "b_window": params.confirm_within,
            "b_unconfirmed": params.confirm_within is not None,
        }
        for job_id in chosen
    ]
    # The queues' counters and buckets, then the claim: one round trip on PostgreSQL.
    execute_together(conn, [*queues_sql.dispatch_writes(conn, plan, params.now), (_CLAIM, claims)])
    claimed = Counter((rows[job_id].queue, rows[job_id].task_type) for job_id in chosen)
    for (queue, task_type), n in claimed.items():
        counts.moved(conn, queue, task_type, JobState.AVAILABLE, JobState.LEASED, n)
    return LeaseBatch(
        jobs=leased, retry_at=plan.retry_at, dry_until=plan.dry_until, left_behind=left_behind
    )


def readable_jobs(
    plan: queues_sql.DispatchPlan,
    rows: dict[str, sa.Row[Any]],
    tokens: dict[str, str],
    params: LeaseParams,
    blobs: BlobCodec,
) -> list[LeasedJob]:
    """The chosen jobs as workers receive them. A job whose payload or checkpoint cannot be
    opened (its key is not configured) is left out of the plan and stays AVAILABLE, with an
    error logged: adding the key lets it run; nothing about it changes meanwhile."""
    leased: list[LeasedJob] = []
    for job_id in list(plan.chosen):
        try:
            leased.append(
                claimed_job(rows[job_id], tokens[job_id], params.now, params.confirm_within, blobs)
            )
        except BlobUnreadable as unreadable:
            log.error("lease.job_unreadable", job_id=job_id, error=str(unreadable))
            plan.chosen.remove(job_id)
            plan.keys_by_job.pop(job_id, None)
            plan.dry_until = {}
    return leased


def rows_that_fit(
    conn: Connection, plan: queues_sql.DispatchPlan, limit: ReplyLimit | None
) -> tuple[dict[str, sa.Row[Any]], bool]:
    """Reads the chosen jobs and cuts the plan to those that fit in one reply (before
    anything is claimed, so the rest stay AVAILABLE); True when some were left out. Reads
    in dispatch order, in growing steps, so a reply that fills up early stops the reading
    too (a lease of many large jobs does not read them all)."""
    if limit is None:
        return rows_by_id(conn, plan.chosen, JOB_COLUMNS), False
    rows: dict[str, sa.Row[Any]] = {}
    if len(plan.chosen) <= _FIRST_READ_STEP:
        rows = rows_by_id(conn, plan.chosen, JOB_COLUMNS)
        if sum(map(leased_job_size, rows.values())) <= limit.budget:
            return rows, False  # the common case: everything fits
    sizes: list[int] = []
    kept: list[int] = []
    full = False
    step = _FIRST_READ_STEP
    while len(sizes) < len(plan.chosen) and not full:
        part = plan.chosen[len(sizes) : len(sizes) + step]
        missing = [job_id for job_id in part if job_id not in rows]
        rows.update(rows_by_id(conn, missing, JOB_COLUMNS))
        sizes.extend(leased_job_size(rows[job_id]) for job_id in part)
        kept, full = fit_in_reply(sizes, limit)
        step *= 4
    if len(kept) == len(plan.chosen):
        return rows, False
    for job_id, size in zip(plan.chosen, sizes, strict=False):
        if size > limit.hard_limit:
            log.error("lease.job_too_large", job_id=job_id, size=size)
    plan.chosen = [plan.chosen[i] for i in kept]
    plan.keys_by_job = {job_id: plan.keys_by_job[job_id] for job_id in plan.chosen}
    # What the plan knew of empty buckets assumed every job it chose; claim it no more.
    plan.dry_until = {}
    return rows, True


# What a heartbeat that asks for the checkpoint (return_checkpoint) reads. Only such a one
# reads the column: a checkpoint may be as large as a payload, and heartbeats are the hot path.
_HOLDER_AND_CHECKPOINT = [*HOLDER_COLUMNS, jobs.c.checkpoint]


def extend(
    conn: Connection, items: Sequence[HeartbeatParams], now: Micros
) -> list[HeartbeatResult | ConveyorError]:
    asked = any(item.return_checkpoint for item in items)
    columns = _HOLDER_AND_CHECKPOINT if asked else HOLDER_COLUMNS
    rows = rows_by_id(conn, [i.job_id for i in items], columns, lock=True)
    blobs = codec_of(conn)
    outcomes: list[HeartbeatResult | ConveyorError] = []
    updates = []
    for item in items:
        row = rows.get(item.job_id)
        problem = fencing_problem(item.job_id, item.lease_token, row, now)
        if problem is not None or row is None:
            outcomes.append(problem or NotFound(f"job {item.job_id!r} not found"))
            continue
        try:
            checkpoint = returned_checkpoint(item, row, blobs)
        except BlobUnreadable as unreadable:
            # Its key is not configured here: refuse the heartbeat (nothing changes), as a
            # Lease leaves such a job untaken; adding the key lets the next one through.
            outcomes.append(unreadable)
            continue
        wanted = now + (item.extend_by if item.extend_by is not None else row.lease_duration)
        # "Extend" never shortens: a heartbeat asking for less keeps the current expiry.
        expires = max(row.lease_expires_at, wanted)
        updates.append(
            {
                "b_id": item.job_id,
                "b_token": item.lease_token,
                "b_expires": expires,
                "b_checkpoint": blobs.seal(item.job_id, "checkpoint", item.checkpoint),
            }
        )
        outcomes.append(
            HeartbeatResult(
                lease_expires_at=expires,
                cancel_requested=row.cancel_requested,
                checkpoint=checkpoint,
            )
        )
    if updates:
        _EXTEND.executemany(conn, updates)
    return outcomes


def returned_checkpoint(item: HeartbeatParams, row: sa.Row[Any], blobs: BlobCodec) -> bytes | None:
    """The checkpoint a heartbeat's reply carries: none unless it asked; else the one it sent
    (which this heartbeat stores), or the stored one, opened. An empty checkpoint is none
    (docs/protocol.md, "Checkpoints: empty versus absent"), as in LeasedJob."""
    if not item.return_checkpoint:
        return None
    if item.checkpoint is not None:
        return item.checkpoint or None
    return blobs.open(item.job_id, "checkpoint", row.checkpoint) or None


def settle(
    conn: Connection,
    receipts: Sequence[ReceiptParams],
    now: Micros,
    decide: ReceiptDecider,
    rng: Random,
) -> list[TransitionResult | ConveyorError]:
    """Applies receipts fenced by lease token; the holders are read locked (PostgreSQL), and
    the UPDATE re-checks the state and token it expects as well."""
    rows = rows_by_id(conn, [r.job_id for r in receipts], HOLDER_COLUMNS, lock=True)
    blobs = codec_of(conn)
    outcomes: list[TransitionResult | ConveyorError] = []
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    settled: dict[str, tuple[TransitionResult, str]] = {}
    for receipt in receipts:
        row = rows.get(receipt.job_id)
        replay = settled.get(receipt.job_id)
        digest = receipt_digest(receipt.outcome, receipt.result)
        if replay is not None and row is not None and row.lease_token == receipt.lease_token:
            done, applied = replay
            same = applied == digest
            outcomes.append(as_replay(done) if same else conflicting_receipt(row.id))
            continue
        if (
            row is not None
            and row.lease_token == receipt.lease_token
            and row.state != JobState.LEASED
        ):
            outcomes.append(repeated_receipt(row, receipt.outcome, receipt.result))
            continue
        problem = fencing_problem(receipt.job_id, receipt.lease_token, row, now)
        if problem is not None or row is None:
            outcomes.append(problem or NotFound(f"job {receipt.job_id!r} not found"))
            continue
        holder = lease_holder(row)
        transition = decide(holder, receipt, now, rng)
        updates.append(
            transition_params(
                row.id, receipt.lease_token, transition, keep_token=True, blobs=blobs, digest=digest
            )
        )
        history.append(history_row(holder, now, transition.history_outcome, transition.error))
        done = transition_result(holder, transition)
        counts.moved(conn, row.queue, row.task_type, JobState.LEASED, transition.state)
        settled[receipt.job_id] = (done, digest)
        outcomes.append(done)
    execute_together(conn, [(_APPLY_TRANSITION, updates), (_RECORD_ATTEMPT, history)])
    return outcomes


def rescue(
    conn: Connection, now: Micros, limit: int, decide: ExpiryDecider, rng: Random, forget: Forget
) -> Processed[list[TransitionResult]]:
    query = (
        sa.select(*HOLDER_COLUMNS)
        .where(jobs.c.state == JobState.LEASED, jobs.c.lease_expires_at <= now)
        .order_by(jobs.c.lease_expires_at)
        .limit(limit)
    )
    rows = conn.execute(dialects.lock_rows(conn.dialect, query, skip_locked=True)).all()
    return isolating(
        conn,
        rows,
        lambda batch: rescue_rows(conn, batch, now, decide, rng),
        lambda row, exc: fail_unrescuable(conn, row, now, exc),
        forget,
    )


def rescue_rows(
    conn: Connection, rows: Sequence[Any], now: Micros, decide: ExpiryDecider, rng: Random
) -> list[TransitionResult]:
    outcomes: list[TransitionResult] = []
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for row in rows:
        holder = lease_holder(row)
        transition = decide(holder, now, rng)
        # Clearing the token makes a late receipt from the lost lease fail its fencing check.
        updates.append(
            transition_params(
                row.id, row.lease_token, transition, keep_token=False, blobs=codec_of(conn)
            )
        )
        counts.moved(conn, row.queue, row.task_type, JobState.LEASED, transition.state)
        history.append(history_row(holder, now, transition.history_outcome, transition.error))
        done = transition_result(holder, transition)
        outcomes.append(replace(done, unconfirmed=True) if holder.unconfirmed else done)
    execute_together(conn, [(_APPLY_TRANSITION, updates), (_RECORD_ATTEMPT, history)])
    return outcomes


def fail_unrescuable(
    conn: Connection, row: Any, now: Micros, exc: Exception
) -> tuple[list[TransitionResult], Isolated]:
    """An expired lease whose next step cannot be computed ends the job as FAILED, with
    the reason, so that the reaper does not meet it again."""
    reason = reason_of(exc)
    changed = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == row.id, state_still(JobState.LEASED))
        .values(
            state=JobState.FAILED,
            finished_at=now,
            lease_token=None,
            lease_expires_at=None,
            error_type=ISOLATED_ERROR_TYPE,
            error_message=(
                f"the coordinator could not compute this job's next attempt ({reason}); "
                "it was failed so that lease rescue goes on for other jobs. Check its "
                "retry settings, then RetryJob"
            ),
            error_non_retryable=True,
        )
    ).rowcount
    counts.moved(conn, row.queue, row.task_type, JobState.LEASED, JobState.FAILED, changed)
    failed = TransitionResult(
        job_id=row.id,
        queue=row.queue,
        task_type=row.task_type,
        attempt=row.attempt,
        worker_id=row.leased_by or "",
        state=JobState.FAILED,
        run_at=None,
    )
    return [failed], Isolated("job", row.id, reason)


def promote(conn: Connection, now: Micros, limit: int) -> list[TransitionResult]:
    due = (
        sa.select(jobs.c.id)
        .where(jobs.c.state == JobState.SCHEDULED, jobs.c.run_at <= now)
        .order_by(jobs.c.run_at)
        .limit(limit)
    )
    due = dialects.lock_rows(conn.dialect, due, skip_locked=True)
    result = conn.execute(
        sa.update(jobs)
        # The UPDATE states the state it expects: a job cancelled meanwhile stays cancelled.
        .where(jobs.c.id.in_(due.scalar_subquery()), state_still(JobState.SCHEDULED))
        .values(state=JobState.AVAILABLE)
        .returning(jobs.c.id, jobs.c.queue, jobs.c.task_type, jobs.c.attempt)
    )
    promoted = [
        TransitionResult(
            job_id=row.id,
            queue=row.queue,
            task_type=row.task_type,
            attempt=row.attempt,
            worker_id="",
            state=JobState.AVAILABLE,
            run_at=now,
        )
        for row in result
    ]
    for job in promoted:
        counts.moved(conn, job.queue, job.task_type, JobState.SCHEDULED, JobState.AVAILABLE)
    return promoted


def cancel(conn: Connection, job_id: str, now: Micros) -> Job:
    locked = locked_row(conn, job_id)
    state = JobState(locked.state)
    load_job(conn, job_id)  # a job that cannot be read is refused before anything changes
    step = cancel_step(job_id, state)
    if step == CancelStep.FINISH:
        changed = conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, state_still(state))
            .values(state=JobState.CANCELLED, finished_at=now)
        ).rowcount
        counts.moved(conn, locked.queue, locked.task_type, state, JobState.CANCELLED, changed)
    elif step == CancelStep.REQUEST:
        # The worker hears of it in its next heartbeat; its receipt ends the job.
        changed = conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, state_still(JobState.LEASED))
            .values(cancel_requested=True)
        ).rowcount
    else:
        changed = 1
    if changed != 1:
        raise _moved_on(job_id)
    return load_job(conn, job_id)


def retry(conn: Connection, job_id: str, now: Micros) -> Job:
    locked = locked_row(conn, job_id)
    state = JobState(locked.state)
    load_job(conn, job_id)  # a job that cannot be read is refused before anything changes
    check_retryable(job_id, state)
    changed = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, state_still(state))
        .values(
            state=JobState.AVAILABLE,
            attempt=0,
            run_at=now,
            finished_at=None,
            result=None,
            lease_token=None,
            lease_expires_at=None,
            cancel_requested=False,
        )
    ).rowcount
    if changed != 1:
        raise _moved_on(job_id)
    counts.moved(conn, locked.queue, locked.task_type, state, JobState.AVAILABLE)
    return load_job(conn, job_id)


def locked_row(conn: Connection, job_id: str) -> Any:
    """A job's state (with its queue and task type), its row locked until the transaction
    ends (PostgreSQL), so that the decision taken from it still holds when the UPDATE runs."""
    query = sa.select(jobs.c.state, jobs.c.queue, jobs.c.task_type).where(jobs.c.id == job_id)
    row = conn.execute(dialects.lock_rows(conn.dialect, query)).first()
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    return row


def _moved_on(job_id: str) -> FailedPrecondition:
    # Unreachable while the row is locked; the UPDATE's own state check is the last guard.
    return FailedPrecondition(f"job {job_id!r} changed state meanwhile; read it and try again")


def load_job(conn: Connection, job_id: str) -> Job:
    row = (conn.execute(sa.select(*JOB_COLUMNS).where(jobs.c.id == job_id))).first()
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    history = conn.execute(
        sa.select(job_attempts).where(job_attempts.c.job_id == job_id).order_by(job_attempts.c.id)
    )
    return job_from_row(row, tuple(attempt_from_row(h) for h in history), codec_of(conn))


def rows_by_id(
    conn: Connection, ids: Sequence[str], columns: list[Any], *, lock: bool = False
) -> dict[str, sa.Row[Any]]:
    """Rows by id, read in id order; `lock` locks them (PostgreSQL) for a fencing decision,
    always in the same order, so two writers cannot deadlock on them."""
    rows: dict[str, sa.Row[Any]] = {}
    for chunk in chunks(sorted(set(ids))):
        result = conn.execute(rows_by_id_query(conn.dialect, chunk, columns, lock=lock))
        rows.update({row.id: row for row in result})
    return rows


def rows_by_id_query(
    dialect: Dialect, ids: Sequence[str], columns: list[Any], *, lock: bool = False
) -> sa.Select[Any]:
    query = sa.select(*columns).where(dialects.one_of(dialect, jobs.c.id, ids)).order_by(jobs.c.id)
    return dialects.lock_rows(dialect, query) if lock else query


# The basic view of a listed job leaves out its largest fields.
BASIC_JOB_COLUMNS = [
    sa.null().label(c.name) if c.name in ("payload", "result", "checkpoint") else c
    for c in JOB_COLUMNS
]


def job_page(conn: Connection, query: Any, params: ListJobsParams) -> JobPage:
    """The page's jobs, read row by row until the next one would pass the reply limit (the
    rows after it are never fetched)."""
    page: list[Job] = []
    total = 0
    blobs = codec_of(conn)
    result = conn.execute(query)
    try:
        for row in result:
            job = job_from_row(row, (), blobs)
            if params.reply_limit is not None:
                size = listed_job_size(job)
                if page and total + size > params.reply_limit.budget:
                    return JobPage(jobs=page, more=True)
                total += size
            page.append(job)
    finally:
        result.close()
    return JobPage(jobs=page, more=len(page) == params.page_size)


def due_times(conn: Connection) -> DueTimes:
    scheduled = conn.scalar(
        sa.select(sa.func.min(jobs.c.run_at)).where(jobs.c.state == JobState.SCHEDULED)
    )
    expiry = conn.scalar(
        sa.select(sa.func.min(jobs.c.lease_expires_at)).where(jobs.c.state == JobState.LEASED)
    )
    return DueTimes(next_scheduled_at=scheduled, next_lease_expiry_at=expiry)
