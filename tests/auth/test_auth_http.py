"""`--auth` on the HTTP endpoints: the HTTP/JSON API checks `Authorization: Bearer` with the
gRPC interceptor's rules (one Gate: roles, queue globs, limits), every route enumerated from
the routing table; /metrics needs any valid token; the dashboard an admin token (header or
login)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from auth_support import MakeToken
from conveyor_server.api.auth import ALLOWED_ROLES
from conveyor_server.api.http.routes import ROUTES, Route
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import Role
from conveyor_server.main import Coordinator
from conveyor_server.store.tokens import TokenStore

UNAUTHENTICATED, PERMISSION_DENIED = 16, 7


@pytest.fixture
def auth_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(
        server_config,
        auth=True,
        http_listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        dashboard_listen="127.0.0.1:0",
        enqueue_rate=1.0,
        enqueue_burst=3,
    )


@pytest.fixture
async def api(auth_coordinator: Coordinator) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://{auth_coordinator.http_address}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as client:
        yield client


def path_of(route: Route) -> str:
    """The route's path with each variable filled in."""
    return re.sub(r"\{[^}]+\}", "x", route.template)


async def send(
    client: httpx.AsyncClient, route: Route, token: str | None = None, body: object = None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    json = body if body is not None else ({} if route.body is not None else None)
    return await client.request(route.verb, path_of(route), headers=headers, json=json)


def test_every_route_calls_an_rpc_with_roles() -> None:
    assert {route.rpc for route in ROUTES} <= set(ALLOWED_ROLES)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.verb} {r.template}")
async def test_every_route_is_closed_without_a_token(api: httpx.AsyncClient, route: Route) -> None:
    for headers in (
        {},
        {"authorization": "Bearer cvy_" + "A" * 43},  # well formed, unknown
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer " + "x" * 5000},
    ):
        body = {} if route.body is not None else None
        reply = await api.request(route.verb, path_of(route), headers=headers, json=body)
        assert reply.status_code == 401, (headers, reply.text)
        assert reply.json()["code"] == UNAUTHENTICATED
        assert reply.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.verb} {r.template}")
async def test_each_role_gets_exactly_the_routes_of_its_rpcs(
    api: httpx.AsyncClient, make_token: MakeToken, route: Route
) -> None:
    for role in Role:
        reply = await send(api, route, make_token(f"t-{role.value}", role.value))
        if role in ALLOWED_ROLES[route.rpc]:
            assert reply.status_code not in (401, 403), (role, reply.text)
        else:
            assert reply.status_code == 403, (role, reply.text)
            assert reply.json()["code"] == PERMISSION_DENIED
            assert route.rpc in reply.json()["message"]


async def test_queue_globs_apply_over_http(api: httpx.AsyncClient, make_token: MakeToken) -> None:
    token = make_token("billing", "producer", queues=["billing-*"])
    headers = {"authorization": f"Bearer {token}"}
    job = {"queue": "billing-eu", "task_type": "charge"}
    assert (await api.post("/v1/jobs", json=job, headers=headers)).status_code == 200
    refused = await api.post("/v1/jobs", json={**job, "queue": "mail"}, headers=headers)
    assert refused.status_code == 403 and "mail" in refused.json()["message"]
    # A schedule (POST /v1/jobs with cron) is CreateSchedule: admin only, as over gRPC.
    cron = {**job, "cron": "0 3 * * *"}
    assert (await api.post("/v1/jobs", json=cron, headers=headers)).status_code == 403


async def test_the_enqueue_limit_is_shared_with_grpc_and_answers_429_with_retry_info(
    api: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = {"authorization": f"Bearer {make_token('flood', 'producer')}"}
    batch = {"jobs": [{"queue": "q", "task_type": "t"}] * 3}
    assert (await api.post("/v1/jobs:batch", json=batch, headers=headers)).status_code == 200
    refused = await api.post("/v1/jobs:batch", json=batch, headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    [detail] = refused.json()["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.RetryInfo"


async def test_a_revoked_token_is_refused(
    api: httpx.AsyncClient, make_token: MakeToken, token_store: TokenStore
) -> None:
    token = make_token("gone", "admin")
    token_store.revoke("gone")
    # Revoked before its first use, so no cache holds it: the lookup itself refuses it.
    reply = await api.get("/v1/server-info", headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 401 and reply.json()["message"] == "unknown or revoked token"


async def test_the_openapi_document_stays_open_and_declares_bearer_auth(
    api: httpx.AsyncClient,
) -> None:
    document = (await api.get("/v1/openapi.json")).json()
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_metrics_need_a_token_of_any_role(
    auth_coordinator: Coordinator, make_token: MakeToken
) -> None:
    base = f"http://{auth_coordinator.http_addresses()['metrics']}"
    async with httpx.AsyncClient(base_url=base) as client:
        refused = await client.get("/metrics")
        assert (
            refused.status_code == 401 and "bearer" in refused.headers["www-authenticate"].lower()
        )
        token = make_token("prometheus", "worker", queues=["!"])
        scraped = await client.get("/metrics", headers={"authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "conveyor_" in scraped.text


async def test_metrics_refuse_a_token_of_another_namespace(
    auth_coordinator: Coordinator, make_token: MakeToken
) -> None:
    base = f"http://{auth_coordinator.http_addresses()['metrics']}"
    token = make_token("team-scraper", "admin", namespace="team-a")
    async with httpx.AsyncClient(base_url=base) as client:
        refused = await client.get("/metrics", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 403 and "namespace" in refused.text


async def test_the_dashboard_refuses_admins_of_another_namespace_or_of_some_queues(
    auth_coordinator: Coordinator, make_token: MakeToken
) -> None:
    base = f"http://{auth_coordinator.http_addresses()['dashboard']}"
    team_admin = make_token("team-admin", "admin", namespace="team-a")
    queue_admin = make_token("mail-admin", "admin", queues=["mail*"])
    async with httpx.AsyncClient(base_url=base) as client:
        for token in (team_admin, queue_admin):
            reply = await client.get("/queues", headers={"authorization": f"Bearer {token}"})
            assert reply.status_code == 403, reply.text
            assert token not in reply.text


async def test_the_dashboard_needs_an_admin_token_by_header_or_login(
    auth_coordinator: Coordinator, make_token: MakeToken
) -> None:
    base = f"http://{auth_coordinator.http_addresses()['dashboard']}"
    admin, producer = make_token("ops", "admin"), make_token("app", "producer")
    async with httpx.AsyncClient(base_url=base) as client:
        for path in ("/", "/queues", "/jobs", "/dead", "/schedules", "/jobs/x", "/queues/q"):
            reply = await client.get(path)
            assert reply.status_code == 303 and reply.headers["location"] == "/login", path
        assert (await client.post("/jobs/x/cancel", data={"csrf": "x"})).status_code == 401
        as_producer = {"authorization": f"Bearer {producer}"}
        assert (await client.get("/queues", headers=as_producer)).status_code == 403
        as_admin = {"authorization": f"Bearer {admin}"}
        assert (await client.get("/queues", headers=as_admin)).status_code == 200

    async with httpx.AsyncClient(base_url=base) as browser:
        form = (await browser.get("/login")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        wrong = await browser.post("/login", data={"csrf": csrf[1], "token": producer})
        assert wrong.status_code == 403 and producer not in wrong.text
        signed = await browser.post("/login", data={"csrf": csrf[1], "token": admin})
        assert signed.status_code == 303 and "conveyor_session" in signed.cookies
        assert admin not in signed.headers.get("set-cookie", "")
        assert (await browser.get("/queues")).status_code == 200
        await browser.post("/logout", data={"csrf": csrf[1]})
        assert (await browser.get("/queues")).status_code == 303


async def test_http_calls_act_within_the_tokens_namespace(
    api: httpx.AsyncClient, make_token: MakeToken
) -> None:
    team = {"authorization": f"Bearer {make_token('team-a', 'admin', namespace='team-a')}"}
    other = {"authorization": f"Bearer {make_token('team-b', 'admin', namespace='team-b')}"}
    created = await api.post("/v1/jobs", json={"queue": "q", "task_type": "t"}, headers=team)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]

    own = await api.get(f"/v1/jobs/{job_id}", headers=team)
    assert own.status_code == 200 and own.json()["queue"] == "q"
    foreign = await api.get(f"/v1/jobs/{job_id}", headers=other)
    assert foreign.status_code == 404
    listed = await api.get("/v1/jobs", params={"queue": "q"}, headers=other)
    assert listed.status_code == 200 and not listed.json().get("jobs")
