"""Bearer tokens in front of the coordinator's other HTTP endpoints (metrics, dashboard), with
`--auth`: the same Gate (api/auth.py) as the gRPC and HTTP/JSON APIs, so the same token store,
cache and revocation apply. Messages never quote a token."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor_server.api.auth import Gate, TokenStoreUnavailable
from conveyor_server.core.auth import DEFAULT_NAMESPACE, Principal, Role, Unauthenticated


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


async def authenticate(
    gate: Gate,
    authorization: list[str],
    roles: frozenset[Role] | None,
    *,
    every_queue: bool = False,
) -> Principal | Refusal:
    """The principal of the one bearer token given, if it holds one of `roles` (None: any);
    else why not, as an HTTP status (401, 403, 503) and a message. These endpoints are
    operator views of every namespace, so the token must be of the namespace `default`
    (a team's token would otherwise read other teams' queues); with `every_queue`, it must
    also be unrestricted by --queues."""
    try:
        principal = await gate.principal([("authorization", value) for value in authorization])
    except Unauthenticated as refused:
        return Refusal(401, str(refused).replace("metadata", "header"))
    except TokenStoreUnavailable as unavailable:
        return Refusal(503, str(unavailable))
    if roles is not None and not roles & principal.roles:
        wanted = ", ".join(sorted(r.value for r in roles))
        return Refusal(403, f"this endpoint needs a token with the role {wanted}")
    if principal.namespace != DEFAULT_NAMESPACE:
        return Refusal(403, "this endpoint shows every namespace: it needs a token of `default`")
    if every_queue and principal.queues:
        return Refusal(403, "this endpoint shows every queue: it needs a token without --queues")
    return principal


def authorization_headers(scope: Scope) -> list[str]:
    return [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == b"authorization"
    ]


class BearerGuard:
    """ASGI middleware: every HTTP request needs `Authorization: Bearer <token>` of a valid
    token holding one of `roles` (None: any role)."""

    def __init__(self, app: ASGIApp, gate: Gate, roles: frozenset[Role] | None = None) -> None:
        self._app = app
        self._gate = gate
        self._roles = roles

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        found = await authenticate(self._gate, authorization_headers(scope), self._roles)
        if isinstance(found, Refusal):
            headers = [(b"content-type", b"text/plain; charset=utf-8")]
            if found.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="conveyor"'))
            body = (found.message + "\n").encode()
            await send({"type": "http.response.start", "status": found.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


# How long a dashboard login lasts, and how many are kept (the oldest go first).
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


class Sessions:
    """Dashboard logins: a random session id (the cookie) -> the token it was opened with,
    kept in this process only. Every request looks the token up again through the Gate, so a
    revoked token ends its sessions within the cache's second."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._tokens: dict[str, tuple[float, str]] = {}

    def open(self, token: str) -> str:
        if len(self._tokens) >= MAX_SESSIONS:
            del self._tokens[next(iter(self._tokens))]
        session = secrets.token_urlsafe(32)
        self._tokens[session] = (self._monotonic() + SESSION_SECONDS, token)
        return session

    def token(self, session: str | None) -> str | None:
        entry = self._tokens.get(session or "")
        if entry is None:
            return None
        if entry[0] <= self._monotonic():
            del self._tokens[session or ""]
            return None
        return entry[1]

    def close(self, session: str | None) -> None:
        self._tokens.pop(session or "", None)
