"""API tokens in the `auth_tokens` table, self-contained: its own small engine on the same
database URL as the job store (the coordinator reads, `conveyor tokens` writes).

Only a token's SHA-256 is stored (core/auth.py says why that hash). Every coordinator sharing
the database sees a new or revoked token at its next lookup; the API's cache holds a lookup at
most one second."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from conveyor_server.core.auth import Principal, Role, hash_token, new_token, same_hash
from conveyor_server.store.migrate import upgrade_to_head
from conveyor_server.store.schema import auth_tokens

_SEPARATOR = ","


class TokenExists(Exception):
    """A token of that name exists already (revoke it first)."""


@dataclass(frozen=True)
class TokenInfo:
    """What `conveyor tokens list` shows: never the token or its hash."""

    name: str
    namespace: str
    roles: tuple[str, ...]
    queues: tuple[str, ...]
    created_at: int


def _engine(url: str) -> Engine:
    engine = sa.create_engine(url, pool_size=1, max_overflow=0, hide_parameters=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            # The coordinator writes in WAL mode; wait for its writer instead of failing.
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    return engine


def _principal(row: sa.Row[tuple[object, ...]]) -> Principal:
    queues = str(row.queues)
    return Principal(
        name=str(row.name),
        namespace=str(row.namespace),
        roles=frozenset(Role(r) for r in str(row.roles).split(_SEPARATOR)),
        queues=tuple(queues.split(_SEPARATOR)) if queues else (),
    )


def find(conn: Connection, token: str) -> Principal | None:
    """The principal of a live token, or None."""
    wanted = hash_token(token)
    row = conn.execute(sa.select(auth_tokens).where(auth_tokens.c.token_hash == wanted)).first()
    # The index lookup already matched; the constant-time compare keeps the rule simple to
    # audit (every presented secret meets a stored one through compare_digest).
    if row is None or not same_hash(wanted, str(row.token_hash)):
        return None
    return _principal(row)


class TokenStore:
    def __init__(self, url: str) -> None:
        self._engine = _engine(url)

    def close(self) -> None:
        self._engine.dispose()

    def migrate(self) -> None:
        with self._engine.begin() as conn:
            upgrade_to_head(conn)

    def find(self, token: str) -> Principal | None:
        with self._engine.connect() as conn:
            return find(conn, token)

    def create(
        self, name: str, namespace: str, roles: frozenset[Role], queues: tuple[str, ...]
    ) -> str:
        """Stores a new token and returns it: the only time it exists in the clear."""
        token = new_token()
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    auth_tokens.insert().values(
                        name=name,
                        token_hash=hash_token(token),
                        namespace=namespace,
                        roles=_SEPARATOR.join(sorted(r.value for r in roles)),
                        queues=_SEPARATOR.join(queues),
                        created_at=int(time.time()),
                    )
                )
        except sa.exc.IntegrityError:
            raise TokenExists(f"a token named {name!r} exists already; revoke it first") from None
        return token

    def list(self) -> list[TokenInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(auth_tokens).order_by(auth_tokens.c.name)).all()
        return [
            TokenInfo(
                name=row.name,
                namespace=row.namespace,
                roles=tuple(row.roles.split(_SEPARATOR)),
                queues=tuple(row.queues.split(_SEPARATOR)) if row.queues else (),
                created_at=row.created_at,
            )
            for row in rows
        ]

    def revoke(self, name: str) -> bool:
        """Deletes the token; False if there was none of that name."""
        with self._engine.begin() as conn:
            result = conn.execute(auth_tokens.delete().where(auth_tokens.c.name == name))
        return result.rowcount > 0
