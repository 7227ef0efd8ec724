"""Whose call this is: the Scope (core/namespaces.py) the auth interceptor found for the
caller's token, for the servicer to act within. A context variable, because the interceptor
and the handler run in the same task; both transports set it through api/auth.acting_as.
Without --auth nobody sets it, and every call acts in the namespace "default" with every
queue."""

from __future__ import annotations

from contextvars import ContextVar

from conveyor_server.core.namespaces import Scope

# Scope is a frozen dataclass: sharing the default is safe.
CALLER_SCOPE: ContextVar[Scope] = ContextVar(
    "conveyor_caller_scope",
    default=Scope(),  # noqa: B039
)
