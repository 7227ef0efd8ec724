"""Push delivery as policy: a queue's push target, how an HTTP reply becomes a receipt, and the
request signature. Pure functions; the pusher (maintenance/pusher.py) does the I/O."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.v1 import coordinator_pb2 as pb

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.model import JobError, LeasedJob, Micros, Outcome
from conveyor_server.core.namespaces import local_of

DEFAULT_TIMEOUT: Micros = 30 * MICROS_PER_SECOND
DEFAULT_MAX_CONCURRENCY = 10
# Statuses that say "try again" although they are 4xx (request timeout, conflict, too many).
RETRYABLE_4XX = frozenset({408, 409, 429})
# A Retry-After beyond this is taken as this: a misbehaving function must not park a job
# for years.
MAX_RETRY_AFTER: Micros = 24 * 3600 * MICROS_PER_SECOND
# How much of a reply body an error message quotes: never the whole body.
_BODY_PREFIX = 200


@dataclass(frozen=True, slots=True)
class PushConfig:
    """A queue's push target. `signing_secret` is None when none is set."""

    url: str
    timeout: Micros = DEFAULT_TIMEOUT
    headers: tuple[tuple[str, str], ...] = ()
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    signing_secret: str | None = None

    def to_bytes(self) -> bytes:
        """The stored form: a serialized conveyor.v1.PushTarget (plain protobuf, no gRPC), so
        the stored value gains fields as the wire message does."""
        message = pb.PushTarget(
            url=self.url,
            headers=dict(self.headers),
            max_concurrency=self.max_concurrency,
            signing_secret=self.signing_secret or "",
        )
        message.timeout.FromMicroseconds(self.timeout)
        return message.SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> PushConfig:
        message = pb.PushTarget.FromString(data)
        return cls(
            url=message.url,
            timeout=message.timeout.ToMicroseconds() or DEFAULT_TIMEOUT,
            headers=tuple(sorted(message.headers.items())),
            max_concurrency=message.max_concurrency or DEFAULT_MAX_CONCURRENCY,
            signing_secret=message.signing_secret or None,
        )


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What a reply means: None outcome for 202 (the function sends its own receipt)."""

    outcome: Outcome | None
    result: bytes | None = None
    error: JobError | None = None
    retry_after: Micros | None = None


ACCEPTED = PushOutcome(outcome=None)


def _failure(message: str, error_type: str, *, retryable: bool) -> PushOutcome:
    error = JobError(message=message, type=error_type, non_retryable=not retryable)
    return PushOutcome(outcome=Outcome.FAILURE, error=error)


def outcome_of_reply(
    status: int, body: bytes, retry_after: str | None, max_result: int, now: Micros
) -> PushOutcome:
    """Maps an HTTP reply to a receipt: 202 accepted; other 2xx success with the body as the
    result; 408/409/429 and 5xx retryable; any other status a non-retryable failure."""
    if status == 202:
        return ACCEPTED
    if 200 <= status < 300:
        if len(body) > max_result:
            return _failure(
                f"the push reply body is {len(body)} bytes; a result may be at most "
                f"{max_result} bytes",
                "PushResultTooLarge",
                retryable=False,
            )
        return PushOutcome(outcome=Outcome.SUCCESS, result=body)
    snippet = body[:_BODY_PREFIX].decode("utf-8", "replace")
    message = f"push endpoint answered HTTP {status}" + (f": {snippet}" if snippet else "")
    retryable = status >= 500 or status in RETRYABLE_4XX
    outcome = _failure(message, f"HTTP{status}", retryable=retryable)
    if status == 429 and retry_after is not None:
        delay = parse_retry_after(retry_after, now)
        if delay is not None:
            return PushOutcome(outcome.outcome, error=outcome.error, retry_after=delay)
    return outcome


def outcome_of_transport_error(timed_out: bool, detail: str) -> PushOutcome:
    """A timeout or a connection error: the function may not have run, so try again."""
    what, error_type = ("timed out", "PushTimeout") if timed_out else ("failed", "PushConnection")
    return _failure(f"push request {what}: {detail[:_BODY_PREFIX]}", error_type, retryable=True)


def parse_retry_after(value: str, now: Micros) -> Micros | None:
    """Retry-After as delay-seconds or an HTTP date; None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return min(int(value) * MICROS_PER_SECOND, MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = int(when.timestamp() * MICROS_PER_SECOND) - now
    return min(max(delay, 0), MAX_RETRY_AFTER)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Conveyor-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def rfc3339(micros: Micros) -> str:
    moment = datetime.fromtimestamp(micros / MICROS_PER_SECOND, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_headers(
    config: PushConfig, job: LeasedJob, *, deadline: Micros, now: Micros
) -> dict[str, str]:
    """The headers of one push: the target's own, then Conveyor's (which win). Besides the
    four the contract names, the task type, queue and attempt budget let one endpoint serve
    several task types (the SDKs' push adapters pick the handler by Conveyor-Task-Type)."""
    headers = dict(config.headers)
    headers.update(
        {
            "Content-Type": "application/octet-stream",
            "Conveyor-Job-Id": job.job_id,
            "Conveyor-Attempt": str(job.attempt),
            "Conveyor-Lease-Token": job.lease_token,
            "Conveyor-Deadline": rfc3339(deadline),
            # Names as the queue's own namespace knows them (core/namespaces.py).
            "Conveyor-Task-Type": local_of(job.task_type),
            "Conveyor-Queue": local_of(job.queue),
            "Conveyor-Max-Attempts": str(job.max_attempts),
        }
    )
    if job.task_version:
        headers["Conveyor-Task-Version"] = job.task_version
    if config.signing_secret:
        seconds = math.floor(now / MICROS_PER_SECOND)
        headers["Conveyor-Signature"] = signature(config.signing_secret, seconds, job.payload)
    return headers
