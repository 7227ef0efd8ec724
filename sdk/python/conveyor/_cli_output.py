"""What the `conveyor` client commands print: JSON documents for `--json`, and short readable
lines and tables otherwise. Pure functions of SDK values; nothing here talks to the
coordinator."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from conveyor.models import (
    Job,
    JobError,
    JobState,
    Queue,
    RateLimit,
    RetryPolicy,
    Schedule,
    TaskType,
)

# -- JSON ------------------------------------------------------------------------------------


def bytes_json(value: bytes) -> dict[str, str]:
    """Bytes as UTF-8 text when they decode, else base64; `encoding` says which."""
    try:
        return {"encoding": "utf-8", "data": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(value).decode("ascii")}


def to_json(value: Any) -> Any:
    """SDK values as JSON-ready data: enums by name, times in ISO 8601, durations in seconds."""
    if isinstance(value, bytes):
        return bytes_json(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_json(value), indent=2, ensure_ascii=False)


# -- small readable pieces -------------------------------------------------------------------


def when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def span(value: timedelta | float | None) -> str:
    """A duration the way people write it: 90 s is "1m30s", a day is "1d"."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:g}s"
    parts: list[str] = []
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def labelled_bytes(label: str, value: bytes) -> tuple[str, str]:
    """A field line's label and value; the label says when the value is base64."""
    shown = bytes_json(value)
    if shown["encoding"] == "base64":
        return f"{label} (base64)", shown["data"]
    return label, shown["data"]


def rate_limit(limit: RateLimit | None) -> str:
    return "none" if limit is None else f"{limit.rate:g}/s, burst {limit.burst}"


def retry_policy(policy: RetryPolicy) -> str:
    def part(value: timedelta | float | None, duration: bool = False) -> str:
        if value is None:
            return "default"
        return span(value) if duration else f"{value:g}"

    return (
        f"initial {part(policy.initial_backoff, True)}, multiplier {part(policy.multiplier)}, "
        f"max {part(policy.max_backoff, True)}, jitter {part(policy.jitter)}"
    )


def job_error(error: JobError | None) -> str:
    if error is None:
        return "-"
    text = f"{error.type}: {error.message}" if error.type else error.message
    return text + (" (non-retryable)" if error.non_retryable else "")


def fields(rows: Iterable[tuple[str, str]]) -> str:
    """`label: value` lines with the values lined up."""
    rows = list(rows)
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}".rstrip() for label, value in rows)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the header alone when there are no rows."""
    cells = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


# -- jobs, queues, schedules -----------------------------------------------------------------


def job_text(job: Job) -> str:
    rows = [
        ("job_id", job.job_id),
        ("queue", job.queue),
        ("task_type", job.task_type),
        ("state", job.state.name + (" (cancel requested)" if job.cancel_requested else "")),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("priority", str(job.priority)),
        ("run_at", when(job.run_at)),
        ("created_at", when(job.created_at)),
        ("finished_at", when(job.finished_at)),
        ("lease_duration", span(job.lease_duration)),
        labelled_bytes("payload", job.payload),
    ]
    if job.state == JobState.LEASED:
        rows += [("leased_by", job.leased_by), ("lease_expires_at", when(job.lease_expires_at))]
    if job.result:
        rows.append(labelled_bytes("result", job.result))
    if job.checkpoint:
        rows.append(labelled_bytes("checkpoint", job.checkpoint))
    if job.last_error is not None:
        rows.append(("last_error", job_error(job.last_error)))
    for label, value in (
        ("idempotency_key", job.idempotency_key),
        ("throttle_key", job.throttle_key),
        ("parent_job_id", job.parent_job_id),
    ):
        if value:
            rows.append((label, value))
    text = fields(rows)
    if job.attempts:
        history = table(
            ("ATTEMPT", "WORKER", "STARTED_AT", "FINISHED_AT", "OUTCOME", "ERROR"),
            (
                (
                    str(a.attempt),
                    a.worker_id or "-",
                    when(a.started_at),
                    when(a.finished_at),
                    a.outcome.name if a.outcome else "-",
                    job_error(a.error),
                )
                for a in job.attempts
            ),
        )
        text += "\n\n" + history
    return text


def jobs_table(jobs: Iterable[Job]) -> str:
    return table(
        ("JOB_ID", "QUEUE", "TASK_TYPE", "STATE", "ATTEMPT", "RUN_AT", "CREATED_AT"),
        (
            (
                job.job_id,
                job.queue,
                job.task_type,
                job.state.name,
                f"{job.attempt}/{job.max_attempts}",
                when(job.run_at),
                when(job.created_at),
            )
            for job in jobs
        ),
    )


def queue_text(queue: Queue) -> str:
    stats = queue.stats
    held = [
        reason
        for reason, flag in (
            ("rate limit", stats.held_by_rate_limit),
            ("concurrency limit", stats.held_by_concurrency_limit),
            ("pause", stats.held_by_pause),
        )
        if flag
    ]
    return fields(
        [
            ("name", queue.name),
            ("paused", "yes" if queue.paused else "no"),
            ("rate_limit", rate_limit(queue.rate_limit)),
            ("per_key_rate_limit", rate_limit(queue.per_key_rate_limit)),
            ("max_concurrency", str(queue.max_concurrency or "no cap")),
            ("max_attempts", str(queue.max_attempts or "default")),
            ("lease_duration", span(queue.lease_duration) if queue.lease_duration else "default"),
            ("retry_policy", retry_policy(queue.retry_policy)),
            (
                "retention",
                f"succeeded {span(queue.retention_succeeded)}, "
                f"failed {span(queue.retention_failed)}, "
                f"cancelled {span(queue.retention_cancelled)}",
            ),
            (
                "jobs",
                f"scheduled {stats.scheduled}, available {stats.available}, "
                f"leased {stats.leased}, succeeded {stats.succeeded}, failed {stats.failed}, "
                f"cancelled {stats.cancelled}",
            ),
            ("oldest_available_age", span(stats.oldest_available_age)),
            ("dispatch_rate", f"{stats.dispatch_rate:g}/s"),
            ("held_by", ", ".join(held) or "-"),
        ]
    )


def queues_table(queues: Iterable[Queue]) -> str:
    return table(
        ("NAME", "PAUSED", "AVAILABLE", "LEASED", "SCHEDULED", "FAILED", "RATE_LIMIT", "MAX_CONC"),
        (
            (
                q.name,
                "yes" if q.paused else "no",
                str(q.stats.available),
                str(q.stats.leased),
                str(q.stats.scheduled),
                str(q.stats.failed),
                rate_limit(q.rate_limit),
                str(q.max_concurrency or "-"),
            )
            for q in queues
        ),
    )


def schedule_text(schedule: Schedule) -> str:
    job = schedule.job
    return fields(
        [
            ("name", schedule.name),
            ("cron", schedule.cron),
            ("timezone", schedule.timezone),
            ("paused", "yes" if schedule.paused else "no"),
            ("queue", job.queue),
            ("task_type", job.task_type),
            labelled_bytes("payload", job.payload),
            ("priority", str(job.priority)),
            ("max_attempts", str(job.max_attempts or "default")),
            ("lease_duration", span(job.lease_duration) if job.lease_duration else "default"),
            ("throttle_key", job.throttle_key or "-"),
            ("misfire_policy", schedule.misfire_policy.name.lower().replace("_", "-")),
            ("catch_up_limit", str(schedule.catch_up_limit)),
            ("overlap_policy", schedule.overlap_policy.name.lower()),
            ("next_fire_at", when(schedule.next_fire_at)),
            ("last_fire_at", when(schedule.last_fire_at)),
            ("last_job_id", schedule.last_job_id or "-"),
        ]
    )


def schedules_table(schedules: Iterable[Schedule]) -> str:
    return table(
        ("NAME", "CRON", "TIMEZONE", "QUEUE", "TASK_TYPE", "PAUSED", "NEXT_FIRE_AT"),
        (
            (
                s.name,
                s.cron,
                s.timezone,
                s.job.queue,
                s.job.task_type,
                "yes" if s.paused else "no",
                when(s.next_fire_at),
            )
            for s in schedules
        ),
    )


def task_type_json(task_type: TaskType) -> dict[str, Any]:
    """The descriptors as the names of their files: the bytes are for machines that have
    the RPC, not for a terminal."""
    return {
        "name": task_type.name,
        "version": task_type.version,
        "message_type": task_type.message_type,
        "files": [file.name for file in task_type.descriptors.file],
        "registered_at": to_json(task_type.registered_at),
    }


def task_type_text(task_type: TaskType) -> str:
    return fields(
        [
            ("name", task_type.name),
            ("version", task_type.version),
            ("message_type", task_type.message_type),
            ("files", ", ".join(file.name for file in task_type.descriptors.file)),
            ("registered_at", when(task_type.registered_at)),
        ]
    )


def task_types_table(task_types: Iterable[TaskType]) -> str:
    return table(
        ["NAME", "VERSION", "MESSAGE_TYPE", "REGISTERED_AT"],
        [(t.name, t.version, t.message_type, when(t.registered_at)) for t in task_types],
    )
