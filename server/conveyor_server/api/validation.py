"""Turns requests into validated domain values, or an InvalidArgument that names the field and
says what to fix. Nothing invalid gets past this module into the core or the store."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import importlib.metadata
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor_server.api.convert import micros_of_duration, micros_of_timestamp
from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.contracts import canonical_descriptors
from conveyor_server.core.model import (
    DEFAULT_MAX_ATTEMPTS,
    NO_SETTINGS,
    HeartbeatParams,
    JobError,
    JobSettings,
    JobSpecInput,
    JobState,
    ListJobsParams,
    Micros,
    Outcome,
    QueueConfig,
    RateLimit,
    ReceiptParams,
    ReplyLimit,
    Retention,
    RetryOverrides,
    TaskTypeRef,
    Version,
)
from conveyor_server.core.push import DEFAULT_MAX_CONCURRENCY as DEFAULT_PUSH_CONCURRENCY
from conveyor_server.core.push import DEFAULT_TIMEOUT as DEFAULT_PUSH_TIMEOUT
from conveyor_server.core.push import PushConfig
from conveyor_server.core.schedules import (
    DEFAULT_CATCH_UP_LIMIT,
    MAX_CATCH_UP_LIMIT,
    MisfirePolicy,
    OverlapPolicy,
    ScheduleSpec,
    validate_cron,
    validate_timezone,
)
from conveyor_server.errors import InvalidArgument, shown

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
WORKER_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")
MAX_LEASE_WAIT: Micros = 30 * MICROS_PER_SECOND
MAX_WAIT_JOB_TIMEOUT: Micros = 300 * MICROS_PER_SECOND
DEFAULT_WAIT_JOB_TIMEOUT: Micros = 30 * MICROS_PER_SECOND
MAX_LEASE_DURATION: Micros = 24 * 3600 * MICROS_PER_SECOND
# LeaseRequest.confirm_within when confirm is set without it, and its shortest value.
DEFAULT_CONFIRM_WITHIN: Micros = 10 * MICROS_PER_SECOND
MIN_CONFIRM_WITHIN: Micros = 1000
MAX_MAX_ATTEMPTS = 10_000
MAX_JOBS_PER_LEASE = 1000
MAX_JOBS_PER_BATCH = 10_000
MAX_QUEUES_PER_LEASE = 100
MAX_KEY_LENGTH = 256
MAX_ERROR_MESSAGE = 16 * 1024
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TASK_TYPES_PER_LEASE = 1000
MAX_DESCRIPTORS_BYTES = 4 * 1024 * 1024
# Items in one HeartbeatBatch or ReceiptBatch: a batch is one writer transaction, and a
# 300,000-item batch held the single writer for 4 s.
MAX_BATCH_ITEMS = 1000
# Queues x task types of one Lease: each pair is a worker-declaration row.
MAX_LEASE_DECLARATIONS = 1000
MAX_LEASE_TOKEN_LENGTH = 128
# google.protobuf.Duration and Timestamp ranges (duration.proto, timestamp.proto).
PROTO_MAX_DURATION_SECONDS = 315_576_000_000
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
# The longest backoff, delay, retry_after or retention accepted: about 100 years. Added to
# any time a coordinator can see, it stays far below year 10000.
LONGEST: Micros = 36_525 * 24 * 3600 * MICROS_PER_SECOND
# Rate limits: at least one job per ~11.6 days, at most a million per second; a burst of 1 to
# 1,000,000; and a full bucket refills (burst / rate) within LONGEST, so token arithmetic and
# the due times it produces stay finite and in range.
MIN_RATE = 1e-6
MAX_RATE = 1e6
MAX_BURST = 1_000_000
MAX_CONCURRENCY = 1_000_000
MAX_MESSAGE_TYPE_LENGTH = 512
# A protobuf full name: dot-separated identifiers.
MESSAGE_TYPE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


# A reply's size when the caller states none: gRPC's default 4 MiB receive limit, less room
# for the reply's own framing and anything an estimate misses.
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024 - 64 * 1024
# The server's own gRPC send and receive limit unless the composition root says otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


def name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{field} {shown(value)} is malformed: use 1 to 128 letters, digits, '.', '_' or '-'"
        )
    return value


def job_id(value: str, field: str = "job_id") -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if len(value) > 64:
        raise InvalidArgument(f"{field} is too long to be a job id")
    return value


def _bytes(value: bytes, field: str, limits: Limits) -> bytes:
    if len(value) > limits.max_payload_bytes:
        raise InvalidArgument(
            f"{field} is {len(value)} bytes, over the limit of {limits.max_payload_bytes} bytes: "
            "store large data elsewhere and pass a reference"
        )
    return value


def duration(value: Duration, field: str) -> Micros:
    """A non-negative Duration of at most LONGEST (about 100 years); callers narrow it."""
    seconds, nanos = value.seconds, value.nanos
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        raise InvalidArgument(f"{field} is not a valid Duration: seconds and nanos differ in sign")
    if abs(nanos) >= 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid Duration: nanos out of range")
    if abs(seconds) > PROTO_MAX_DURATION_SECONDS:
        raise InvalidArgument(f"{field} is not a valid Duration: seconds out of range")
    # Checked on the fields, not the micros: -1 ns would round to 0 micros.
    if seconds < 0 or nanos < 0:
        raise InvalidArgument(f"{field} must not be negative")
    micros = micros_of_duration(value)
    if micros > LONGEST:
        raise InvalidArgument(f"{field} must be at most 100 years")
    return micros


def _optional_duration(
    message: object, field: str, path: str, default: Micros | None = None
) -> Micros | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return default
    value: Duration = getattr(message, field)
    return duration(value, f"{path}{field}")


def timestamp(value: Timestamp, field: str) -> Micros:
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid Timestamp: nanos out of range")
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(f"{field} must be between 0001-01-01 and 9999-12-31 (UTC)")
    return micros_of_timestamp(value)


def retry_overrides(message: pb.RetryPolicy, path: str) -> RetryOverrides:
    initial = _optional_duration(message, "initial_backoff", path)
    max_backoff = _optional_duration(message, "max_backoff", path)
    multiplier = message.multiplier if message.HasField("multiplier") else None
    jitter = message.jitter if message.HasField("jitter") else None
    if multiplier is not None and not (math.isfinite(multiplier) and 1.0 <= multiplier <= 100.0):
        raise InvalidArgument(f"{path}multiplier must be between 1 and 100, not {multiplier:g}")
    if jitter is not None and not (math.isfinite(jitter) and 0.0 <= jitter <= 1.0):
        raise InvalidArgument(f"{path}jitter must be a fraction between 0 and 1, not {jitter:g}")
    if initial is not None and max_backoff is not None and max_backoff < initial:
        raise InvalidArgument(f"{path}max_backoff must not be shorter than initial_backoff")
    return RetryOverrides(
        initial_backoff=initial, multiplier=multiplier, max_backoff=max_backoff, jitter=jitter
    )


def max_attempts(value: int, field: str) -> int | None:
    if value < 0 or value > MAX_MAX_ATTEMPTS:
        raise InvalidArgument(
            f"{field} must be between 1 and {MAX_MAX_ATTEMPTS} (0 means the default, "
            f"{DEFAULT_MAX_ATTEMPTS})"
        )
    return value or None


def lease_duration(message: object, path: str) -> Micros | None:
    value = _optional_duration(message, "lease_duration", path)
    if value is not None and not MICROS_PER_SECOND <= value <= MAX_LEASE_DURATION:
        raise InvalidArgument(f"{path}lease_duration must be between 1 s and 24 h")
    return value


def job_settings(message: pb.JobSpec | pb.Queue, path: str) -> JobSettings:
    if not (
        message.max_attempts
        or message.HasField("lease_duration")
        or message.HasField("retry_policy")
    ):
        return NO_SETTINGS  # the common case, and one object for resolve_settings to cache
    return JobSettings(
        max_attempts=max_attempts(message.max_attempts, f"{path}max_attempts"),
        lease_duration=lease_duration(message, path),
        retry=retry_overrides(message.retry_policy, f"{path}retry_policy."),
    )


def optional_name(value: str, field: str) -> str | None:
    return name(value, field) if value else None


def job_spec(spec: pb.JobSpec, limits: Limits, path: str = "job.") -> JobSpecInput:
    queue = name(spec.queue, f"{path}queue")
    task_type = name(spec.task_type, f"{path}task_type")
    payload = _bytes(spec.payload, f"{path}payload", limits)
    if spec.HasField("run_at") and spec.HasField("delay"):
        raise InvalidArgument(f"set {path}run_at or {path}delay, not both")
    run_at = timestamp(spec.run_at, f"{path}run_at") if spec.HasField("run_at") else None
    delay = _optional_duration(spec, "delay", path, 0)
    assert delay is not None
    if len(spec.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"{path}idempotency_key is longer than {MAX_KEY_LENGTH} characters")
    if len(spec.throttle_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"{path}throttle_key is longer than {MAX_KEY_LENGTH} characters")
    if spec.parent_job_id:
        job_id(spec.parent_job_id, f"{path}parent_job_id")
    return JobSpecInput(
        queue=queue,
        task_type=task_type,
        payload=payload,
        run_at=run_at,
        delay=delay,
        priority=spec.priority,
        settings=job_settings(spec, path),
        idempotency_key=spec.idempotency_key or None,
        parent_job_id=spec.parent_job_id or None,
        throttle_key=spec.throttle_key or None,
        task_version=(
            Version.parse(spec.task_version, f"{path}task_version") if spec.task_version else None
        ),
    )


# W3C Trace Context: version "-" trace-id "-" parent-id "-" flags, lowercase hex. A later
# version may append fields after a "-"; its first four fields keep this layout.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
TRACEPARENT_LENGTH = 55


def traceparent(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The caller's `traceparent` (gRPC metadata or HTTP header), or None when it sent none
    or a malformed one. A malformed trace context is ignored, not refused, as the W3C
    recommendation says (the job is simply not part of a trace): tracing must never make an
    enqueue fail. Only the four fields this version knows are kept."""
    for key, value in metadata or ():
        if key.lower() != "traceparent":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        match = _TRACEPARENT.fullmatch(text.strip())
        if match is None:
            return None
        version, trace_id, parent_id, _flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
            return None
        if set(parent_id) == {"0"}:
            return None
        return text.strip()[:TRACEPARENT_LENGTH]
    return None


def traced(spec: JobSpecInput, metadata: Iterable[tuple[str, Any]] | None) -> JobSpecInput:
    found = traceparent(metadata)
    return spec if found is None else dataclasses.replace(spec, traceparent=found)


def job_specs(specs: list[pb.JobSpec], limits: Limits) -> list[JobSpecInput]:
    if not specs:
        raise InvalidArgument("jobs is empty: send at least one JobSpec")
    if len(specs) > MAX_JOBS_PER_BATCH:
        raise InvalidArgument(f"jobs has {len(specs)} entries; send at most {MAX_JOBS_PER_BATCH}")
    return [job_spec(spec, limits, f"jobs[{i}].") for i, spec in enumerate(specs)]


@dataclass(frozen=True)
class LeaseInput:
    worker_id: str
    queues: tuple[str, ...]
    max_jobs: int
    wait_seconds: float
    task_types: tuple[TaskTypeRef, ...] = ()
    # None: no lease confirmation (LeaseRequest.confirm false).
    confirm_within: Micros | None = None


def _confirm_within(request: pb.LeaseRequest) -> Micros | None:
    """The confirmation window a Lease asks for; None without confirm."""
    if not request.confirm:
        if request.HasField("confirm_within"):
            raise InvalidArgument(
                "confirm_within is set but confirm is false: set confirm to hold the leases "
                "unconfirmed, or leave confirm_within unset"
            )
        return None
    window = _optional_duration(request, "confirm_within", "", DEFAULT_CONFIRM_WITHIN)
    assert window is not None
    if not MIN_CONFIRM_WITHIN <= window <= MAX_LEASE_DURATION:
        raise InvalidArgument("confirm_within must be between 1 ms and 24 h (unset: 10 s)")
    return window


def lease(request: pb.LeaseRequest) -> LeaseInput:
    if not request.worker_id:
        raise InvalidArgument("worker_id is required: name the worker (host and pid, say)")
    if not WORKER_ID_PATTERN.fullmatch(request.worker_id):
        raise InvalidArgument("worker_id must be 1 to 200 printable characters without spaces")
    if not request.queues:
        raise InvalidArgument("queues is empty: name at least one queue to lease from")
    if len(request.queues) > MAX_QUEUES_PER_LEASE:
        raise InvalidArgument(f"queues names more than {MAX_QUEUES_PER_LEASE} queues")
    queues = tuple(dict.fromkeys(name(q, f"queues[{i}]") for i, q in enumerate(request.queues)))
    if not 0 <= request.max_jobs <= MAX_JOBS_PER_LEASE:
        raise InvalidArgument(f"max_jobs must be between 1 and {MAX_JOBS_PER_LEASE} (0 means 1)")
    wait = _optional_duration(request, "wait", "", 0)
    assert wait is not None
    if wait > MAX_LEASE_WAIT:
        raise InvalidArgument("wait must be at most 30 s; call Lease again to keep waiting")
    if len(request.task_types) > MAX_TASK_TYPES_PER_LEASE:
        raise InvalidArgument(f"task_types names more than {MAX_TASK_TYPES_PER_LEASE} task types")
    if len(request.queues) * len(request.task_types) > MAX_LEASE_DECLARATIONS:
        raise InvalidArgument(
            f"queues x task_types is {len(request.queues)} x {len(request.task_types)}; at most "
            f"{MAX_LEASE_DECLARATIONS} pairs per Lease: split the worker's declarations"
        )
    refs = tuple(
        dict.fromkeys(
            TaskTypeRef(
                name=name(ref.name, f"task_types[{i}].name"),
                version=(
                    Version.parse(ref.version, f"task_types[{i}].version") if ref.version else None
                ),
            )
            for i, ref in enumerate(request.task_types)
        )
    )
    return LeaseInput(
        worker_id=request.worker_id,
        queues=queues,
        max_jobs=request.max_jobs or 1,
        wait_seconds=wait / MICROS_PER_SECOND,
        task_types=refs,
        confirm_within=_confirm_within(request),
    )


def server_info(limits: Limits) -> pb.ServerInfo:
    """The limits this module enforces, as GetServerInfo states them."""
    try:
        version = importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    info = pb.ServerInfo(
        server_version=version,
        max_payload_bytes=limits.max_payload_bytes,
        max_result_bytes=limits.max_payload_bytes,
        max_checkpoint_bytes=limits.max_payload_bytes,
        max_jobs_per_lease=MAX_JOBS_PER_LEASE,
        max_message_bytes=limits.max_message_bytes,
        default_max_reply_bytes=min(DEFAULT_MAX_REPLY_BYTES, limits.max_message_bytes),
        max_error_message_chars=MAX_ERROR_MESSAGE,
        max_page_size=MAX_PAGE_SIZE,
        max_jobs_per_batch=MAX_JOBS_PER_BATCH,
    )
    info.max_lease_wait.FromMicroseconds(MAX_LEASE_WAIT)
    info.max_lease_duration.FromMicroseconds(MAX_LEASE_DURATION)
    return info


def reply_limit(requested: int, limits: Limits, field: str = "max_reply_bytes") -> ReplyLimit:
    """The size a reply may reach: what the caller can receive (0: the default that fits
    gRPC's default receive limit), never more than this server sends."""
    if requested < 0:
        raise InvalidArgument(f"{field} must not be negative (0 means the default)")
    budget = requested or DEFAULT_MAX_REPLY_BYTES
    return ReplyLimit(
        budget=min(budget, limits.max_message_bytes), hard_limit=limits.max_message_bytes
    )


def heartbeat(request: pb.HeartbeatRequest, limits: Limits, path: str = "") -> HeartbeatParams:
    extend_by = _optional_duration(request, "extend_by", path)
    if extend_by is not None and not 0 < extend_by <= MAX_LEASE_DURATION:
        raise InvalidArgument(f"{path}extend_by must be more than 0 and at most 24 h")
    checkpoint = (
        _bytes(request.checkpoint, f"{path}checkpoint", limits)
        if request.HasField("checkpoint")
        else None
    )
    return HeartbeatParams(
        job_id=job_id(request.job_id, f"{path}job_id"),
        lease_token=_token(request.lease_token, path),
        extend_by=extend_by,
        checkpoint=checkpoint,
        return_checkpoint=request.return_checkpoint,
    )


def batched_heartbeat(request: pb.HeartbeatRequest, limits: Limits, path: str) -> HeartbeatParams:
    """A HeartbeatBatch item: a heartbeat that does not ask for the checkpoint, since a batch
    of checkpoints (each up to max_checkpoint_bytes) could pass the reply size limit."""
    if request.return_checkpoint:
        raise InvalidArgument(
            f"{path}return_checkpoint is refused in HeartbeatBatch (the reply could pass the "
            "size limit): ask for the checkpoint with Heartbeat"
        )
    return heartbeat(request, limits, path)


def _token(value: str, path: str) -> str:
    if not value:
        raise InvalidArgument(f"{path}lease_token is required: send the token Lease returned")
    if len(value) > MAX_LEASE_TOKEN_LENGTH:
        raise InvalidArgument(f"{path}lease_token is longer than any token Lease returns")
    return value


def receipt(request: pb.ReceiptRequest, limits: Limits, path: str = "") -> ReceiptParams:
    if int(request.outcome) not in (Outcome.SUCCESS, Outcome.FAILURE, Outcome.RELEASE):
        raise InvalidArgument(
            f"{path}outcome {request.outcome} is not OUTCOME_SUCCESS, OUTCOME_FAILURE or "
            "OUTCOME_RELEASE"
        )
    error = None
    if request.HasField("error"):
        error = JobError(
            message=request.error.message[:MAX_ERROR_MESSAGE],
            type=request.error.type[:200],
            non_retryable=request.error.non_retryable,
        )
    return ReceiptParams(
        job_id=job_id(request.job_id, f"{path}job_id"),
        lease_token=_token(request.lease_token, path),
        outcome=Outcome(request.outcome),
        result=_bytes(request.result, f"{path}result", limits) or None,
        error=error,
        retry_after=_optional_duration(request, "retry_after", path),
    )


def batch_size(items: Sequence[object], field: str) -> None:
    """Refuses a HeartbeatBatch or ReceiptBatch of more than MAX_BATCH_ITEMS items, before
    anything touches the store."""
    if not len(items) <= MAX_BATCH_ITEMS:
        raise InvalidArgument(
            f"{field} has {len(items)} entries; send at most {MAX_BATCH_ITEMS} per call"
        )


def list_jobs(request: pb.ListJobsRequest, limits: Limits | None = None) -> ListJobsParams:
    if request.page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    if request.view not in pb.JobView.values():
        raise InvalidArgument(f"view {request.view} is not a JobView")
    state = None
    if request.state:
        if request.state not in JobState._value2member_map_:
            raise InvalidArgument(f"state {request.state} is not a JobState")
        state = JobState(request.state)
    return ListJobsParams(
        queue=name(request.queue, "queue") if request.queue else None,
        state=state,
        page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        after_job_id=page_after(request.page_token, "ListJobs"),
        full=request.view == pb.JOB_VIEW_FULL,
        reply_limit=reply_limit(0, limits) if limits is not None else None,
    )


def encode_page_token(last_job_id: str) -> str:
    return base64.urlsafe_b64encode(last_job_id.encode()).decode()


def decode_page_token(token: str, rpc: str) -> str:
    """The key a page token of list RPC `rpc` carries; errors name the RPC."""
    try:
        # validate=True: characters outside the alphabet are an error, not silently dropped.
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_page_token(rpc) from None


def _bad_page_token(rpc: str) -> InvalidArgument:
    return InvalidArgument(
        f"{rpc}: page_token is not one this coordinator issued; send the next_page_token of "
        f"the previous {rpc} reply, or none for the first page"
    )


def wait_timeout_seconds(request: pb.WaitJobRequest) -> float:
    timeout = _optional_duration(request, "timeout", "", DEFAULT_WAIT_JOB_TIMEOUT)
    assert timeout is not None
    if timeout > MAX_WAIT_JOB_TIMEOUT:
        raise InvalidArgument("timeout must be at most 300 s; call WaitJob again to keep waiting")
    return timeout / MICROS_PER_SECOND


# -- queues ----------------------------------------------------------------------------------

QUEUE_FIELDS = (
    "rate_limit",
    "per_key_rate_limit",
    "max_concurrency",
    "paused",
    "retry_policy",
    "lease_duration",
    "max_attempts",
    "retention",
    "strict_task_types",
    "push",
)

MAX_PUSH_URL_LENGTH = 2048
MIN_PUSH_TIMEOUT: Micros = 1 * MICROS_PER_SECOND
MAX_PUSH_TIMEOUT: Micros = 15 * 60 * MICROS_PER_SECOND
MAX_PUSH_HEADERS = 50
MAX_PUSH_HEADER_LENGTH = 8 * 1024
MAX_PUSH_CONCURRENCY = 1000
MAX_SIGNING_SECRET_LENGTH = 256
# Headers that describe one connection, not the request: a proxy or the client sets them.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")


def _push_headers(message: pb.PushTarget) -> tuple[tuple[str, str], ...]:
    if len(message.headers) > MAX_PUSH_HEADERS:
        raise InvalidArgument(f"queue.push.headers has more than {MAX_PUSH_HEADERS} entries")
    for header, value in message.headers.items():
        if not _HEADER_NAME.fullmatch(header):
            raise InvalidArgument(f"queue.push.headers: {shown(header)} is not a header name")
        lowered = header.lower()
        if lowered.startswith("conveyor-") or lowered in _HOP_BY_HOP:
            raise InvalidArgument(
                f"queue.push.headers: {shown(header)} is set by the coordinator and may not be "
                "given (Conveyor-* and hop-by-hop headers)"
            )
        if len(value) > MAX_PUSH_HEADER_LENGTH or any(c in value for c in "\r\n\0"):
            raise InvalidArgument(
                f"queue.push.headers[{shown(header)}] must be at most {MAX_PUSH_HEADER_LENGTH} "
                "characters, without line breaks"
            )
    return tuple(sorted(message.headers.items()))


def push_target(message: pb.Queue) -> PushConfig | None:
    """The queue's push target; None when `push` is unset (a pull queue)."""
    if not message.HasField("push"):
        return None
    target = message.push
    url = target.url
    parsed = urllib.parse.urlsplit(url) if len(url) <= MAX_PUSH_URL_LENGTH else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidArgument(
            f"queue.push.url must be an http or https URL of at most {MAX_PUSH_URL_LENGTH} "
            f"characters, not {shown(url)}"
        )
    timeout = _optional_duration(target, "timeout", "queue.push.", DEFAULT_PUSH_TIMEOUT)
    assert timeout is not None
    if not MIN_PUSH_TIMEOUT <= timeout <= MAX_PUSH_TIMEOUT:
        raise InvalidArgument("queue.push.timeout must be between 1 s and 15 min")
    concurrency = target.max_concurrency or DEFAULT_PUSH_CONCURRENCY
    if not 1 <= concurrency <= MAX_PUSH_CONCURRENCY:
        raise InvalidArgument(
            f"queue.push.max_concurrency must be between 1 and {MAX_PUSH_CONCURRENCY} "
            f"(0: the default, {DEFAULT_PUSH_CONCURRENCY})"
        )
    if len(target.signing_secret) > MAX_SIGNING_SECRET_LENGTH:
        raise InvalidArgument(
            f"queue.push.signing_secret must be at most {MAX_SIGNING_SECRET_LENGTH} characters"
        )
    return PushConfig(
        url=url,
        timeout=timeout,
        headers=_push_headers(target),
        max_concurrency=concurrency,
        signing_secret=target.signing_secret or None,
    )


def _kept_secret(new: PushConfig | None, current: PushConfig | None) -> PushConfig | None:
    """The secret is write-only, so a target read with GetQueue and written back keeps it:
    an empty signing_secret keeps the one set. Clearing `push` removes it."""
    if new is None or new.signing_secret is not None or current is None:
        return new
    return dataclasses.replace(new, signing_secret=current.signing_secret)


def _rate_limit(
    message: pb.Queue, field: Literal["rate_limit", "per_key_rate_limit"]
) -> RateLimit | None:
    if not message.HasField(field):
        return None
    limit: pb.RateLimit = getattr(message, field)
    if limit.rate == 0 and limit.burst == 0:
        return None  # "no limit"
    if not (math.isfinite(limit.rate) and MIN_RATE <= limit.rate <= MAX_RATE):
        raise InvalidArgument(
            f"queue.{field}.rate must be between {MIN_RATE:g} and {MAX_RATE:g} jobs per second"
        )
    if not 1 <= limit.burst <= MAX_BURST:
        raise InvalidArgument(f"queue.{field}.burst must be between 1 and {MAX_BURST}")
    if limit.burst / limit.rate * MICROS_PER_SECOND > LONGEST:
        raise InvalidArgument(
            f"queue.{field}: burst / rate, the time to refill a full bucket, must be at most "
            "100 years: raise the rate or lower the burst"
        )
    return RateLimit(rate=limit.rate, burst=limit.burst)


def _retention(message: pb.Queue) -> Retention:
    retention = message.retention
    return Retention(
        succeeded=_optional_duration(retention, "succeeded", "queue.retention."),
        failed=_optional_duration(retention, "failed", "queue.retention."),
        cancelled=_optional_duration(retention, "cancelled", "queue.retention."),
    )


def _mask(paths: Sequence[str], allowed: Sequence[str], what: str) -> set[str]:
    if not paths:
        return set(allowed)
    unknown = [p for p in paths if p not in allowed]
    if unknown:
        raise InvalidArgument(
            f"update_mask names {shown(', '.join(unknown))}; a {what} update may name "
            f"{', '.join(allowed)}"
        )
    return set(paths)


def queue_update(
    request: pb.UpdateQueueRequest,
) -> tuple[str, Callable[[QueueConfig], QueueConfig]]:
    """The queue's name and a function applying the masked fields (all when the mask is
    empty) to its current settings."""
    message = request.queue
    queue_name = name(message.name, "queue.name")
    fields = _mask(list(request.update_mask.paths), QUEUE_FIELDS, "queue")
    if not 0 <= message.max_concurrency <= MAX_CONCURRENCY:
        raise InvalidArgument(
            f"queue.max_concurrency must be between 0 (no cap) and {MAX_CONCURRENCY}"
        )
    settings = job_settings(message, "queue.")
    new: dict[str, Any] = {
        "rate_limit": _rate_limit(message, "rate_limit"),
        "per_key_rate_limit": _rate_limit(message, "per_key_rate_limit"),
        "max_concurrency": message.max_concurrency,
        "paused": message.paused,
        "retention": _retention(message),
        "strict_task_types": message.strict_task_types,
        "push": push_target(message),
    }

    def change(current: QueueConfig) -> QueueConfig:
        config = dataclasses.replace(current, **{k: v for k, v in new.items() if k in fields})
        if "push" in fields:
            config = dataclasses.replace(config, push=_kept_secret(config.push, current.push))
        defaults = config.defaults
        if "max_attempts" in fields:
            defaults = dataclasses.replace(defaults, max_attempts=settings.max_attempts)
        if "lease_duration" in fields:
            defaults = dataclasses.replace(defaults, lease_duration=settings.lease_duration)
        if "retry_policy" in fields:
            defaults = dataclasses.replace(defaults, retry=settings.retry)
        return dataclasses.replace(config, defaults=defaults)

    return queue_name, change


def page_after(token: str, rpc: str) -> str | None:
    return decode_page_token(token, rpc) if token else None


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# -- task types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskTypeRegistration:
    name: str
    version: Version
    message_type: str
    descriptors: bytes


def register_task_type(request: pb.RegisterTaskTypeRequest) -> TaskTypeRegistration:
    task_name = name(request.name, "name")
    version = Version.parse(request.version, "version")
    if len(request.message_type) > MAX_MESSAGE_TYPE_LENGTH or not MESSAGE_TYPE_PATTERN.fullmatch(
        request.message_type
    ):
        raise InvalidArgument(
            "message_type must be the full name of a message, package included, such as "
            f"acme.email.v1.SendEmail, not {shown(request.message_type)}"
        )
    if not request.descriptors.file:
        raise InvalidArgument(
            "descriptors is empty: send the message's file and every file it imports "
            "(protoc --include_imports --descriptor_set_out, or FileDescriptorProto.CopyToProto)"
        )
    blob = canonical_descriptors(list(request.descriptors.file))
    if len(blob) > MAX_DESCRIPTORS_BYTES:
        raise InvalidArgument(
            f"descriptors is {len(blob)} bytes; at most {MAX_DESCRIPTORS_BYTES} are accepted"
        )
    return TaskTypeRegistration(task_name, version, request.message_type, blob)


def task_type_key(request: pb.GetTaskTypeRequest) -> tuple[str, Version | None]:
    version = Version.parse(request.version, "version") if request.version else None
    return name(request.name, "name"), version


def encode_task_type_token(name_: str, version: Version) -> str:
    return encode_page_token(f"{name_}@{version}")


def decode_task_type_token(token: str) -> tuple[str, Version]:
    text = decode_page_token(token, "ListTaskTypes")
    task_name, _, version = text.rpartition("@")
    if not task_name:
        raise _bad_page_token("ListTaskTypes")
    try:
        return task_name, Version.parse(version, "page_token")
    except InvalidArgument:
        raise _bad_page_token("ListTaskTypes") from None


# -- schedules -------------------------------------------------------------------------------

SCHEDULE_FIELDS = (
    "cron",
    "timezone",
    "job",
    "misfire_policy",
    "catch_up_limit",
    "overlap_policy",
    "paused",
)


def schedule_spec(message: pb.Schedule, limits: Limits) -> ScheduleSpec:
    if message.job.HasField("run_at") or message.job.HasField("delay"):
        raise InvalidArgument("schedule.job.run_at and delay are not allowed: the cron decides")
    if message.job.idempotency_key:
        raise InvalidArgument(
            "schedule.job.idempotency_key is not allowed: each fire is already enqueued once"
        )
    if message.misfire_policy not in (0, *[int(p) for p in MisfirePolicy]):
        raise InvalidArgument(f"schedule.misfire_policy {message.misfire_policy} is unknown")
    if message.overlap_policy not in (0, *[int(p) for p in OverlapPolicy]):
        raise InvalidArgument(f"schedule.overlap_policy {message.overlap_policy} is unknown")
    if not 0 <= message.catch_up_limit <= MAX_CATCH_UP_LIMIT:
        raise InvalidArgument(f"schedule.catch_up_limit must be between 1 and {MAX_CATCH_UP_LIMIT}")
    job_spec(message.job, limits, "schedule.job.")
    return ScheduleSpec(
        name=name(message.name, "schedule.name"),
        cron=validate_cron(message.cron, "schedule.cron"),
        timezone=validate_timezone(message.timezone, "schedule.timezone"),
        job_spec=job_template_bytes(message.job),
        misfire_policy=MisfirePolicy(message.misfire_policy or MisfirePolicy.RUN_ONCE),
        catch_up_limit=message.catch_up_limit or DEFAULT_CATCH_UP_LIMIT,
        overlap_policy=OverlapPolicy(message.overlap_policy or OverlapPolicy.ALLOW),
        paused=message.paused,
    )


def job_template_bytes(spec: pb.JobSpec) -> bytes:
    """A schedule's job template as stored: the whole JobSpec (deterministic bytes), so no
    field is lost on the way to a fire; fields this server does not know are dropped."""
    template = pb.JobSpec()
    template.CopyFrom(spec)
    template.DiscardUnknownFields()
    return template.SerializeToString(deterministic=True)


def job_template_reader(limits: Limits) -> Callable[[bytes], JobSpecInput]:
    """Reads a stored template back into a validated job, at fire time."""

    def read(data: bytes) -> JobSpecInput:
        return job_spec(pb.JobSpec.FromString(data), limits, "schedule.job.")

    return read


def job_template_queue(data: bytes) -> str:
    """The queue a stored template names, as its namespace knows it; read without validating
    the rest, so that a template that no longer validates (limits lowered since) still
    belongs to its queue's scope."""
    return pb.JobSpec.FromString(data).queue


def schedule_update(
    request: pb.UpdateScheduleRequest, limits: Limits
) -> tuple[str, Callable[[ScheduleSpec], ScheduleSpec]]:
    message = request.schedule
    schedule_name = name(message.name, "schedule.name")
    fields = _mask(list(request.update_mask.paths), SCHEDULE_FIELDS, "schedule")

    def change(current: ScheduleSpec) -> ScheduleSpec:
        # Validate the merged result, so a mask naming only `cron` needs no job template.
        merged = pb.Schedule()
        merged.CopyFrom(message)
        if "cron" not in fields:
            merged.cron = current.cron
        if "timezone" not in fields:
            merged.timezone = current.timezone
        if "misfire_policy" not in fields:
            merged.misfire_policy = int(current.misfire_policy)  # type: ignore[assignment]
        if "catch_up_limit" not in fields:
            merged.catch_up_limit = current.catch_up_limit
        if "overlap_policy" not in fields:
            merged.overlap_policy = int(current.overlap_policy)  # type: ignore[assignment]
        if "paused" not in fields:
            merged.paused = current.paused
        spec = schedule_spec(merged, limits) if "job" in fields else None
        if spec is None:
            merged.job.CopyFrom(pb.JobSpec(queue="q", task_type="t"))  # replaced just below
            spec = dataclasses.replace(schedule_spec(merged, limits), job_spec=current.job_spec)
        return spec

    return schedule_name, change
