"""Errors as HTTP answers: a status and ``{"error": {exit, kind, message, hint}}``.

The client re-raises the same oneoff error class with the same message, so its output and
exit code match local mode. The status says what HTTP clients care about; ``exit`` and
``kind`` say what oneoff cares about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff.errors import (
    ApprovalError,
    AuditError,
    LockBusy,
    NotPermitted,
    OneoffError,
    ReleaseError,
    StoreError,
    UsageError,
)

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = [
    "ApiError",
    "RefusedCredential",
    "error_body",
    "error_response",
    "status_of",
    "unauthorized",
]

# Most specific first: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[OneoffError], int], ...] = (
    (UsageError, 400),
    (NotPermitted, 403),
    (ApprovalError, 409),
    (LockBusy, 409),
    (ReleaseError, 409),
    (StoreError, 503),
    (AuditError, 500),
)


class ApiError(Exception):
    """A oneoff error with an HTTP status other than its class's (401, 404, 409, 413, 422,
    429)."""

    def __init__(
        self, status: int, error: OneoffError, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.headers = dict(headers or {})  # e.g. a 429's Retry-After


class RefusedCredential(ApiError):
    """A runner's credential refused: a run token or run grant that does not check, or a
    grant spent already. Counted toward the caller's address's failure limit like a bad
    signature (``oneoff._server.ratelimit``); answered as its ``error`` says."""


def status_of(error: OneoffError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: OneoffError) -> dict[str, Any]:
    return {
        "error": {
            "exit": error.exit_code,
            "kind": type(error).__name__,
            "message": error.message,
            "hint": error.hint,
        }
    }


def error_response(exc: OneoffError | ApiError) -> JSONResponse:
    from starlette.responses import JSONResponse

    if isinstance(exc, ApiError):
        return JSONResponse(
            error_body(exc.error), status_code=exc.status, headers=exc.headers or None
        )
    return JSONResponse(error_body(exc), status_code=status_of(exc))


def unauthorized(message: str, *, hint: str | None = None) -> ApiError:
    """401: the call carries no valid proof of who makes it (exit 3, NotPermitted)."""
    return ApiError(401, NotPermitted(message, hint=hint))
