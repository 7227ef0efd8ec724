"""The server's error types. The API layer maps each class to one gRPC status code
(api/errors.py); messages are written for the caller and say what to fix."""

from __future__ import annotations


class ConveyorError(Exception):
    """Root of every error the coordinator reports to a caller."""


class InvalidArgument(ConveyorError):
    """The request is malformed; retrying it unchanged cannot succeed."""


class NotFound(ConveyorError):
    """A named job (or other resource) does not exist."""


class AlreadyExists(ConveyorError):
    """An idempotency key is already taken by a job with different content."""


class FailedPrecondition(ConveyorError):
    """The request is well-formed but the job's current state does not allow it."""


class LeaseLost(FailedPrecondition):
    """The lease token is not the job's current lease: expired, superseded or wrong.

    Fencing: the coordinator changes nothing for such a heartbeat or receipt."""


class Unavailable(ConveyorError):
    """The coordinator is shutting down or its store is unreachable; retry elsewhere or later."""


class ResourceExhausted(ConveyorError):
    """The coordinator ran out of something it needs to keep the request (disk space for the
    database, say); nothing was stored, and the same request can succeed once there is room."""


class DatabaseInUse(FailedPrecondition):
    """Another coordinator holds the SQLite database's lock file: two coordinators on one
    SQLite file would miss each other's wake-ups, so the second one refuses to start."""


SHOWN_CHARS = 64


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message may quote it: repr'd, and cut to a short prefix, so a
    20,000-character name cannot push a status message past the transport's metadata limit
    (8 KiB by default in gRPC clients). `limit` is for quoting another error's text."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
