"""The dashboard's routes. Safe by default: every change is a POST carrying a CSRF token (an
HMAC, under a per-process secret, of a random cookie), every page is autoescaped, the
Content-Security-Policy allows scripts and styles only from /static, and payloads are shown
only when asked for."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor_server.api.auth import Gate
from conveyor_server.api.http.guard import (
    SESSION_SECONDS,
    Refusal,
    Sessions,
    authenticate,
    authorization_headers,
)
from conveyor_server.core.auth import Principal, Role
from conveyor_server.core.clock import MICROS_PER_SECOND, Clock
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import JobState, ListJobsParams, Micros
from conveyor_server.core.queues import QueueService
from conveyor_server.core.schedule_service import ScheduleService
from conveyor_server.dashboard import charts
from conveyor_server.errors import ConveyorError, NotFound
from conveyor_server.observability.metrics import PrometheusMetrics

HERE = Path(__file__).parent
CSRF_COOKIE = "conveyor_csrf"
SESSION_COOKIE = "conveyor_session"
ADMIN_ONLY = frozenset({Role.ADMIN})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_SIZE = 50
# A job page lists this many of the job's children, with a link to all of them.
CHILDREN_SHOWN = 20
# Search fields (an idempotency key, a parent job id) are cut to the longest key.
MAX_KEY_LENGTH = 256
PERIODS = {"15m": 15, "1h": 60, "6h": 360, "24h": 1440}
# Most of a payload a page shows (on request), in bytes.
MAX_SHOWN_PAYLOAD = 64 * 1024
MAX_BULK_REPLAY = 500


@dataclass(frozen=True)
class DashboardServices:
    jobs: JobService
    queues: QueueService
    schedules: ScheduleService
    metrics: PrometheusMetrics
    clock: Clock


def _when(micros: Micros | None) -> str:
    if micros is None:
        return "—"
    moment = datetime.fromtimestamp(micros / MICROS_PER_SECOND, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _seconds(micros: Micros | None) -> str:
    return "—" if micros is None else f"{micros / MICROS_PER_SECOND:.3f}s"


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, with_headers)


class _Csrf:
    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def token(self, cookie: str) -> str:
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token(cookie), token)


Handler = Callable[[Request], Awaitable[Response]]


def allowed_hosts(listen: str) -> list[str]:
    """Host headers the dashboard answers: on a loopback address only loopback names, so a
    web page that rebinds its own DNS name to 127.0.0.1 cannot read or drive the dashboard
    (its requests carry the attacker's host name)."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host in ("0.0.0.0", "::", ""):  # nosec B104 # compares a flag's value, binds nothing
        return ["*"]
    return [host]


def dashboard_app(
    services: DashboardServices, hosts: list[str] | None = None, gate: Gate | None = None
) -> ASGIApp:
    """`gate` (with `--auth`): every page needs an admin token, sent as `Authorization:
    Bearer` or entered once at /login (a session cookie, see api/http/guard.py)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.filters["secs"] = _seconds
    templates.env.globals["PERIODS"] = PERIODS
    templates.env.globals["LOGIN"] = gate is not None
    csrf = _Csrf()
    sessions = Sessions()

    async def signed_in(request: Request) -> Principal | Refusal:
        assert gate is not None
        headers = authorization_headers(request.scope)
        if not headers:
            token = sessions.token(request.cookies.get(SESSION_COOKIE))
            headers = [f"Bearer {token}"] if token else []
        return await authenticate(gate, headers, ADMIN_ONLY, every_queue=True)

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        context["csrf"] = csrf.token(cookie)
        response = templates.TemplateResponse(request, name, context, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != cookie:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict")
        return response

    def guarded(handler: Handler, *, sign_in: bool = True) -> Handler:
        """Errors become pages; a POST without a valid CSRF token is refused; with a gate,
        a caller that is not signed in as an admin is sent to /login (or refused)."""

        async def run(request: Request) -> Response:
            if gate is not None and sign_in:
                found = await signed_in(request)
                if isinstance(found, Refusal):
                    if found.status == 401 and request.method == "GET":
                        return back("/login")
                    return page(request, "error.html", found.status, message=found.message)
            if request.method == "POST":
                form = await request.form()
                token = form.get("csrf")
                if not csrf.valid(
                    request.cookies.get(CSRF_COOKIE), token if isinstance(token, str) else None
                ):
                    return page(request, "error.html", 403, message="Missing or stale form token: "
                                "reload the page and try again.")  # fmt: skip
            try:
                return await handler(request)
            except NotFound as missing:
                return page(request, "error.html", 404, message=str(missing))
            except ConveyorError as refused:
                return page(request, "error.html", 400, message=str(refused))

        return run

    def back(url: str) -> Response:
        return RedirectResponse(url, status_code=303)

    async def home(request: Request) -> Response:
        return back("/queues")

    async def login(request: Request) -> Response:
        assert gate is not None
        if request.method == "GET":
            return page(request, "login.html")
        form = await request.form()
        token = form.get("token")
        value = token.strip() if isinstance(token, str) else ""
        found = await authenticate(gate, [f"Bearer {value}"], ADMIN_ONLY, every_queue=True)
        if isinstance(found, Refusal):
            return page(request, "login.html", found.status, message=found.message)
        response = back("/queues")
        response.set_cookie(
            SESSION_COOKIE,
            sessions.open(value),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(SESSION_COOKIE))
        response = back("/login")
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def queues(request: Request) -> Response:
        listed = await services.queues.list(None, 1000)
        now = services.clock.now()
        recent = {
            q.config.name: services.metrics.history.window(q.config.name, 1, now).flow[-1]
            for q in listed
        }
        return page(request, "queues.html", queues=listed, recent=recent, states=list(JobState))

    async def queue(request: Request) -> Response:
        name = request.path_params["name"]
        period = request.query_params.get("period", "1h")
        if period not in PERIODS:
            period = "1h"
        found = await services.queues.get(name)
        return page(
            request,
            "queue.html",
            queue=found,
            states=list(JobState),
            period=period,
            graphs=_graphs(services, name, PERIODS[period]),
            graphs_url=f"/queues/{quote(name, safe='')}/graphs?period={period}",
        )

    async def graphs(request: Request) -> Response:
        name = request.path_params["name"]
        period = PERIODS.get(request.query_params.get("period", "1h"), 60)
        return HTMLResponse(_graphs(services, name, period))

    async def set_queue_paused(request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise NotFound(f"no action {action[:20]!r} on a queue")
        paused = action == "pause"
        await services.queues.update(name, lambda c: dataclasses.replace(c, paused=paused))
        form = await request.form()
        target = form.get("next")
        return back(target if isinstance(target, str) and target.startswith("/") else "/queues")

    async def jobs(request: Request) -> Response:
        params = request.query_params
        wanted_id = params.get("id", "").strip()
        if wanted_id:
            return back(f"/jobs/{quote(wanted_id, safe='')}")
        queue = params.get("queue") or None
        task_type = params.get("task_type") or None
        key = params.get("key", "").strip()[:MAX_KEY_LENGTH] or None
        parent = params.get("parent", "").strip()[:MAX_KEY_LENGTH] or None
        state_name = params.get("state", "")
        state = JobState[state_name] if state_name in JobState.__members__ else None
        listed = await services.jobs.list(
            ListJobsParams(
                queue=queue,
                state=state,
                page_size=PAGE_SIZE,
                after_job_id=params.get("page") or None,
                idempotency_key=key,
                parent_job_id=parent,
            )
        )
        shown = [j for j in listed.jobs if task_type is None or j.task_type == task_type]
        next_url = None
        if listed.more and listed.jobs:
            query = {k: v for k, v in params.items() if k != "page" and v}
            next_url = "/jobs?" + urlencode({**query, "page": listed.jobs[-1].job_id})
        return page(
            request,
            "jobs.html",
            jobs=shown,
            queue=queue or "",
            task_type=task_type or "",
            key=key or "",
            parent=parent or "",
            state=state_name if state else "",
            states=list(JobState),
            next_url=next_url,
        )

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        found = await services.jobs.get(job_id)
        payload = None
        if request.query_params.get("show") == "payload":
            payload = found.payload[:MAX_SHOWN_PAYLOAD].decode("utf-8", errors="replace")
        sizes = {
            "payload": len(found.payload),
            "checkpoint": len(found.checkpoint or b""),
            "result": len(found.result or b""),
        }
        children = await services.jobs.list(
            ListJobsParams(
                queue=None,
                state=None,
                page_size=CHILDREN_SHOWN,
                after_job_id=None,
                parent_job_id=found.job_id,
            )
        )
        return page(
            request,
            "job.html",
            job=found,
            payload=payload,
            sizes=sizes,
            JobState=JobState,
            children=children.jobs,
            more_children=children.more,
        )

    async def job_action(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        if action == "cancel":
            await services.jobs.cancel(job_id)
        elif action == "retry":
            await services.jobs.retry(job_id)
        else:
            raise NotFound(f"no action {action[:20]!r} on a job")
        return back(f"/jobs/{quote(job_id, safe='')}")

    async def dead(request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        listed = await services.jobs.list(
            ListJobsParams(
                queue=queue,
                state=JobState.FAILED,
                page_size=PAGE_SIZE,
                after_job_id=request.query_params.get("page") or None,
            )
        )
        next_url = None
        if listed.more and listed.jobs:
            query = {"queue": queue} if queue else {}
            next_url = "/dead?" + urlencode({**query, "page": listed.jobs[-1].job_id})
        return page(request, "dead.html", jobs=listed.jobs, queue=queue or "", next_url=next_url)

    async def replay(request: Request) -> Response:
        form = await request.form()
        ids = [v for v in form.getlist("job_id") if isinstance(v, str)][:MAX_BULK_REPLAY]
        replayed, refused = 0, []
        for job_id in ids:
            try:
                await services.jobs.retry(job_id)
                replayed += 1
            except ConveyorError as error:
                refused.append(f"{job_id[:40]}: {str(error)[:200]}")
        return page(request, "replayed.html", replayed=replayed, refused=refused)

    async def schedules(request: Request) -> Response:
        listed = await services.schedules.list(None, 1000)
        return page(request, "schedules.html", schedules=listed)

    async def schedule_action(request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            raise NotFound(f"no action {action[:20]!r} on a schedule")
        await services.schedules.set_paused(name, action == "pause")
        return back("/schedules")

    routes = [
        Route("/", guarded(home)),
        Route("/queues", guarded(queues)),
        Route("/queues/{name}", guarded(queue)),
        Route("/queues/{name}/graphs", guarded(graphs)),
        Route("/queues/{name}/{action:str}", guarded(set_queue_paused), methods=["POST"]),
        Route("/jobs", guarded(jobs)),
        Route("/jobs/{job_id}", guarded(job)),
        Route("/jobs/{job_id}/{action:str}", guarded(job_action), methods=["POST"]),
        Route("/dead", guarded(dead)),
        Route("/dead/replay", guarded(replay), methods=["POST"]),
        Route("/schedules", guarded(schedules)),
        Route("/schedules/{name}/{action:str}", guarded(schedule_action), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    if gate is not None:
        routes += [
            Route("/login", guarded(login, sign_in=False), methods=["GET", "POST"]),
            Route("/logout", guarded(logout, sign_in=False), methods=["POST"]),
        ]
    app = Starlette(routes=routes)
    return _SecurityHeaders(TrustedHostMiddleware(app, allowed_hosts=hosts or ["*"]))


def _graphs(services: DashboardServices, queue: str, minutes: int) -> str:
    window = services.metrics.history.window(queue, minutes, services.clock.now())
    return str(
        Markup(
            "<figure><figcaption>Task flow per minute: started, finished, errors, timeouts"
            "</figcaption>{}</figure>"
            "<figure><figcaption>Wait time (due → leased), log scale</figcaption>{}</figure>"
            "<figure><figcaption>Run time (leased → receipt), log scale</figcaption>{}</figure>"
        ).format(
            # nosec B704 # charts.py formats numbers only; no job or queue text reaches them
            Markup(charts.flow_chart(window)),  # nosec B704
            Markup(charts.histogram_chart("wait", window.wait)),  # nosec B704
            Markup(charts.histogram_chart("run", window.run)),  # nosec B704
        )
    )
