"""One exception hierarchy for everything the client raises, mapped from
gRPC status codes in one place (:func:`from_rpc_error`)."""

from __future__ import annotations

import grpc


class RwpError(Exception):
    """Base of every error of the client.

    ``message`` is the server's own text where there is one (it names the
    offending field, job or limit); ``code`` is the gRPC status code when the
    error came from a call, ``None`` when the client itself refused.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgument(RwpError, ValueError):
    """A job spec, job file or argument that the server (or the client) refused;
    the message names the field and the rule."""


class OutOfRange(InvalidArgument):
    """A value past a limit of the server (a model file over its size limit)."""


class NotFound(RwpError, LookupError):
    """No such job (or model file) for this caller; another user's jobs are
    NotFound too."""


class AlreadyExists(RwpError):
    """The server already has what the call tried to create."""


class FailedPrecondition(RwpError):
    """Understood, but refused in the job's current state."""


class Unauthenticated(RwpError):
    """The server requires a bearer token and got none, or one it does not know."""


class PermissionDenied(RwpError):
    """The token's role may not do this (a worker token on the job API, say)."""


class ResourceExhausted(RwpError):
    """A limit of the server: too many requests (retry after a moment), too many
    running jobs for the token, or a model over the size limit."""


class Unavailable(RwpError, ConnectionError):
    """The server could not be reached, or is shutting down (after the retries
    of idempotent calls)."""


class DeadlineExceeded(RwpError, TimeoutError):
    """The call did not finish within its timeout."""


class Cancelled(RwpError):
    """The call was cancelled on this side."""


class Unimplemented(RwpError):
    """The server does not implement this call (an older server)."""


class DataLoss(RwpError):
    """A stream broke off or carried something inconsistent (offsets, sizes,
    checksums)."""


class ServerError(RwpError):
    """Any other status: an internal error of the server, say."""


_BY_CODE: dict[grpc.StatusCode, type[RwpError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}


def from_rpc_error(error: grpc.RpcError, *, address: str, rpc: str) -> RwpError:
    """The client's exception for a failed call: the status code picks the
    class, the server's message is kept as it is."""
    # Errors raised by grpc's calls are also grpc.Call objects, with the status.
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    cls = _BY_CODE.get(code, ServerError)
    if cls is Unavailable:
        message = f"cannot reach the server at {address} ({rpc}): {details or 'unavailable'}"
    elif cls is DeadlineExceeded:
        message = f"{rpc} on {address}: {details or 'deadline exceeded'}"
    elif cls is Unimplemented:
        message = f"the server at {address} does not implement {rpc}" + (f": {details}" if details else "")
    elif cls is ServerError:
        message = f"{rpc} on {address} failed ({code.name})" + (f": {details}" if details else "")
    else:
        message = details or f"{rpc}: {code.name}"
    return cls(message, code=code)


def is_transient(error: RwpError) -> bool:
    """Whether the same idempotent call may succeed if retried."""
    return isinstance(error, (Unavailable, ResourceExhausted)) or error.code is grpc.StatusCode.ABORTED
