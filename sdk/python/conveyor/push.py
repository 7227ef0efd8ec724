"""Run a Worker's handlers behind a URL: the coordinator POSTs each job of a push queue to it.

    worker = Worker(...)
    @worker.task("send_email")
    async def send_email(job: JobContext) -> bytes: ...

    app = asgi_app(worker, secret=os.environ["CONVEYOR_SIGNING_SECRET"])  # uvicorn mod:app

The same handler code runs as a pull worker (`worker.run()`) or as a function behind a URL.
The app checks the request's Conveyor-Signature (refusing a bad one, or one older than five
minutes, with 401), runs the handler named by Conveyor-Task-Type and answers as the
coordinator expects: 200 with the result; 422 for a non-retryable failure (the job fails for
good); 500 for a retryable one, or 503 with Retry-After for `Retry(after=...)`.

For work longer than an HTTP request may stay open, `background=True` (or a list of task
types) answers 202 Accepted at once and runs the handler on, heartbeating the lease and
posting the receipt over the coordinator's HTTP/JSON API (`coordinator_url`). Its first
heartbeat, before the handler starts, fetches the checkpoint an earlier attempt saved
(`ctx.checkpoint`), which the push request does not carry:

    app = asgi_app(worker, secret=..., background=True, coordinator_url="http://conveyor:8081")
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from conveyor import _outcome
from conveyor._push_background import BackgroundRunner, parse_deadline
from conveyor._running import RunningJob, job_context
from conveyor.context import Retry
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.worker import Worker

# A signature older (or further in the future) than this is refused: a captured request
# cannot be replayed later.
SIGNATURE_TOLERANCE_SECONDS = 300
# Requests larger than this are refused (413) before the handler runs.
MAX_BODY_BYTES = 32 * 1024 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Conveyor-Signature header value for `body` at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> bool:
    """Whether `header` (Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
    "<t>.<body>")>) signs `body` with `secret` and is at most `tolerance` seconds from `now`.
    Several v1= values are accepted (any one matching), for secret rotation."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


class PushApp:
    """The ASGI app asgi_app() makes; call `aclose()` (or let the server's lifespan shutdown
    do it) to finish background jobs and close the coordinator client."""

    def __init__(
        self, worker: Worker, secret: str | None, background: BackgroundRunner | None, accept: Any
    ) -> None:
        self._worker = worker
        self._secret = secret
        self._background = background
        self._accept = accept  # True: every task type; else a frozenset of task types
        self._closed = False

    @property
    def receipts_sent(self) -> int:
        """Receipts of background jobs the coordinator took."""
        return self._background.receipts_sent if self._background is not None else 0

    @property
    def receipts_refused(self) -> int:
        """Receipts of background jobs refused because the lease had ended (fencing)."""
        return self._background.receipts_refused if self._background is not None else 0

    async def aclose(self) -> None:
        """Lets background jobs finish for the worker's shutdown_grace, then hands the rest
        back (RELEASE); idempotent."""
        if self._background is not None and not self._closed:
            self._closed = True
            await self._background.close(self._worker.config.shutdown_grace)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.aclose)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _reply(send, 405, b"push requests are POSTs")
            return
        body = await _read_body(receive)
        if body is None:
            await _reply(send, 413, b"request body too large")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._secret is not None and not verify_signature(
            self._secret, headers.get("conveyor-signature"), body
        ):
            await _reply(send, 401, b"bad or expired Conveyor-Signature")
            return
        job = _leased_job(headers, body)
        if self._background is not None and (self._accept is True or job.task_type in self._accept):
            if self._closed:
                # Retryable: another instance of the function may take it.
                await _reply(send, 503, b"shutting down", [(b"retry-after", b"1")])
                return
            self._background.accept(
                _running_job(self._worker, job), parse_deadline(headers.get("conveyor-deadline"))
            )
            await _reply(send, 202, b"accepted; the receipt follows")
            return
        status, extra, reply = await _run(self._worker, job)
        await _reply(send, status, reply, extra)


def asgi_app(
    worker: Worker,
    *,
    secret: str | None,
    background: bool | Iterable[str] = False,
    coordinator_url: str | None = None,
    coordinator_headers: Mapping[str, str] | None = None,
) -> PushApp:
    """An ASGI app running `worker`'s registered handlers for pushed jobs. `secret` None
    turns the signature check off (only for a URL nothing else can reach).

    `background` (True, or the task types it applies to) answers 202 Accepted at once and
    runs the handler on in the background, heartbeating its lease and posting its receipt
    over the coordinator's HTTP/JSON API at `coordinator_url` (the coordinator's
    --http-listen address, say "http://conveyor:8081"), with `coordinator_headers` on each
    call (an Authorization header for a proxy in front of it, say). For work longer than
    an HTTP request may stay open; the process must keep running (and its CPU allocated)
    after the reply."""
    runner: BackgroundRunner | None = None
    accept: Any = False
    if background is not False:
        if not coordinator_url:
            raise ValueError(
                "background=... posts receipts over the coordinator's HTTP API: pass "
                "coordinator_url (its --http-listen address, e.g. http://conveyor:8081)"
            )
        if not coordinator_url.startswith(("http://", "https://")):
            raise ValueError(f"coordinator_url must be an http(s) URL, not {coordinator_url!r}")
        runner = BackgroundRunner(worker, coordinator_url, coordinator_headers or {})
        accept = True if background is True else frozenset(background)
    return PushApp(worker, secret, runner, accept)


def _leased_job(headers: dict[str, str], body: bytes) -> pb.LeasedJob:
    return pb.LeasedJob(
        job_id=headers.get("conveyor-job-id", ""),
        lease_token=headers.get("conveyor-lease-token", ""),
        queue=headers.get("conveyor-queue", ""),
        task_type=headers.get("conveyor-task-type", ""),
        task_version=headers.get("conveyor-task-version", ""),
        payload=body,
        attempt=_int(headers.get("conveyor-attempt"), 1),
        max_attempts=_int(headers.get("conveyor-max-attempts"), 1),
    )


def _running_job(worker: Worker, job: pb.LeasedJob) -> RunningJob:
    # No fixed interval: the background runner times heartbeats by the lease's deadline.
    return RunningJob(job, job_context(job), 0.0, time.monotonic())


async def _run(worker: Worker, job: pb.LeasedJob) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    task = worker._task_for(job)
    if task is None:
        # Retryable, as for a pull worker: another deployment may have the handler.
        return 500, [], f"no handler for task type {job.task_type[:100]!r}".encode()
    context = job_context(job)
    try:
        if task.timeout is None:
            value = await worker._call(task, context)
        else:
            value = await worker._call_within(task.timeout, task, context)
        return 200, [], _outcome.result_bytes(value)
    except Retry as retry:
        delay = _outcome.retry_delay(retry)
        extra = [(b"retry-after", str(int(delay.total_seconds())).encode())] if delay else []
        return 503, extra, _outcome.retry_error(retry).message.encode()
    except Exception as exc:
        error = _outcome.failure_error(exc, task.non_retryable)
        status = 422 if error.non_retryable else 500
        return status, [], f"{error.type}: {error.message}".encode()


def _int(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() else default


async def _read_body(receive: Receive) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def _reply(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/octet-stream"), *(extra or [])]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(
    receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
