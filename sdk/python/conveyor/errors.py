"""The SDK's errors: one root, a class per gRPC status the coordinator answers with, and one
table between codes and classes (the server maps its own errors to codes with the mirror of
this table). The coordinator's message is kept: it says what to fix."""

from __future__ import annotations

import grpc

from conveyor.models import Job


class ConveyorError(Exception):
    """Root of every error the SDK raises. `code` is the gRPC status behind it, if any."""

    code: grpc.StatusCode | None = None


class InvalidArgument(ConveyorError):
    """The request is malformed (a bad name, an oversized payload, a negative duration...);
    retrying it unchanged cannot succeed."""


class NotFound(ConveyorError):
    """The job, queue or schedule does not exist (or was pruned)."""


class AlreadyExists(ConveyorError):
    """An idempotency key is taken by a job with different content, or a schedule name is
    taken."""


class FailedPrecondition(ConveyorError):
    """The request is valid but the job's current state does not allow it (retrying a job
    that has not failed, a parent chain that is too deep, a stale lease token)."""


class LeaseLost(FailedPrecondition):
    """A heartbeat or receipt carried a lease token that is no longer the job's current one:
    the lease expired or the job went to another worker. Stop working on the job and do not
    report it."""


class ResourceExhausted(ConveyorError):
    """The coordinator refused the call for lack of room (a message over its size limit)."""


class Unavailable(ConveyorError):
    """The coordinator could not be reached or is shutting down; safe to retry."""


class DeadlineExceeded(ConveyorError):
    """The call ran out of time before the coordinator answered."""


class Cancelled(ConveyorError):
    """The call was cancelled before it finished."""


class Unauthenticated(ConveyorError):
    """The channel's credentials were refused."""


class PermissionDenied(ConveyorError):
    """The caller may not do this."""


class Unimplemented(ConveyorError):
    """The coordinator does not know this RPC: it is older than this SDK."""


class Internal(ConveyorError):
    """The coordinator failed unexpectedly; its log says why."""


class JobFailed(ConveyorError):
    """The awaited job ended in the dead-letter state (FAILED). `job.last_error` says why."""

    def __init__(self, job: Job) -> None:
        error = job.last_error
        reason = (
            f"{error.type + ': ' if error and error.type else ''}{error.message if error else ''}"
        )
        super().__init__(f"job {job.job_id} failed: {reason or 'no error recorded'}")
        self.job = job


class JobCancelled(ConveyorError):
    """The awaited job was cancelled."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} was cancelled")
        self.job = job


class WaitTimeout(ConveyorError, TimeoutError):
    """The awaited job was not finished when the caller's timeout passed."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.job_id} is still {job.state.name} after the wait")
        self.job = job


# The one table between status codes and classes. Codes missing here become ConveyorError.
ERROR_BY_STATUS: dict[grpc.StatusCode, type[ConveyorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
}
# The reverse direction, derived from the table: `InvalidArgument.code` and so on.
for _code, _cls in ERROR_BY_STATUS.items():
    _cls.code = _code

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The StatusCode for a number carried in a batch result (0 = OK)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def from_status(code: grpc.StatusCode, message: str) -> ConveyorError:
    error = ERROR_BY_STATUS.get(code, ConveyorError)(message or code.name)
    error.code = code
    return error


def from_rpc_error(error: grpc.aio.AioRpcError) -> ConveyorError:
    """The typed error for a failed call, keeping the coordinator's message."""
    return from_status(error.code(), error.details() or "")


def from_lease_result(number: int, message: str) -> ConveyorError:
    """The typed error for one item of a HeartbeatBatch or ReceiptBatch reply. On these,
    FAILED_PRECONDITION always means the lease token is not current."""
    code = status_code(number)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return LeaseLost(message or code.name)
    return from_status(code, message)
