"""Who may call what: principals, roles, token hashing and the access policy (plain Python).

A token is 256 random bits (`new_token`). It is stored as its SHA-256 (`hash_token`): for a
high-entropy secret a fast hash is enough, since nobody can guess a 256-bit preimage however
fast the hash; argon2 or bcrypt slow down guessing of *low*-entropy passwords and would cost
tens of milliseconds on every cache miss for no gain here. Comparison is constant-time
(`hmac.compare_digest`) wherever a presented value meets a stored one.

The policy (`check`) takes a method name and the queue names a request touches; the API layer
extracts both, so the rules live here once and apply to every RPC alike."""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TOKEN_PREFIX = "cvy_"  # nosec B105 # a public prefix that marks our tokens, not a secret
# A token as `new_token` makes it: the prefix and 43 URL-safe characters (256 bits).
_TOKEN_SHAPE = re.compile(r"cvy_[A-Za-z0-9_-]{43}")
DEFAULT_NAMESPACE = "default"
MAX_NAME_CHARS = 128
_NAME_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Role(enum.StrEnum):
    PRODUCER = "producer"
    WORKER = "worker"
    ADMIN = "admin"


class AccessError(Exception):
    """Root of the access errors; messages never quote a token."""


class Unauthenticated(AccessError):
    """No token, a malformed one, or one that is unknown or revoked."""


class PermissionDenied(AccessError):
    """A valid token whose roles or queue patterns do not cover the call."""


def queue_matches(queue: str, globs: Iterable[str]) -> bool:
    """Whether queue-name globs (fnmatch, case-sensitive) admit `queue`; no globs admit every
    queue. The one reading of a token's --queues, for the queues a request names and for
    what a listing shows."""
    patterns = tuple(globs)
    return not patterns or any(fnmatch.fnmatchcase(queue, p) for p in patterns)


@dataclass(frozen=True)
class Principal:
    name: str
    namespace: str
    roles: frozenset[Role]
    # Queue-name glob patterns (fnmatch, case-sensitive); empty means every queue.
    queues: tuple[str, ...] = ()

    def may_use_queue(self, queue: str) -> bool:
        return queue_matches(queue, self.queues)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def well_formed(token: str) -> bool:
    """Only tokens of the shape we issue are looked up: anything else (huge, binary, another
    scheme's) is refused before it reaches the database or a cache."""
    return _TOKEN_SHAPE.fullmatch(token) is not None


def same_hash(presented: str, stored: str) -> bool:
    return hmac.compare_digest(presented.encode(), stored.encode())


def check_name(name: str, what: str) -> str:
    if _NAME_SHAPE.fullmatch(name) is None:
        raise ValueError(
            f"{what} must be 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return name


def parse_roles(roles: Iterable[str]) -> frozenset[Role]:
    parsed = set()
    for role in roles:
        try:
            parsed.add(Role(role))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {role[:32]!r}: use one of {allowed}") from None
    if not parsed:
        raise ValueError("a token needs at least one role")
    return frozenset(parsed)


def check(
    principal: Principal,
    method: str,
    queues: Iterable[str],
    allowed: Mapping[str, frozenset[Role]],
) -> None:
    """Raises PermissionDenied unless `principal` may call `method` on `queues`.

    `allowed` maps each method to the roles that may call it (admin is in every entry). A
    method missing from `allowed` is refused to everyone (fail closed)."""
    roles = allowed.get(method)
    if roles is None:
        raise PermissionDenied(f"{method} is not open to any role")
    if not roles & principal.roles:
        raise PermissionDenied(
            f"{method} needs one of the roles {', '.join(sorted(r.value for r in roles))}; "
            f"this token has {', '.join(sorted(r.value for r in principal.roles))}"
        )
    for queue in queues:
        if not principal.may_use_queue(queue):
            raise PermissionDenied(
                f"this token may not use queue {queue[:64]!r} "
                f"(it is limited to {', '.join(principal.queues)})"
            )
