"""One error model for every service: ``{"error": code, "detail": ...}`` with a meaningful status."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RoomeeError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: Any = None, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail if detail is not None else self.code.replace("_", " ")
        if code:
            self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail}


class BadRequest(RoomeeError):
    status_code, code = 400, "bad_request"


class Unauthorized(RoomeeError):
    status_code, code = 401, "unauthorized"


class Forbidden(RoomeeError):
    status_code, code = 403, "forbidden"


class NotFound(RoomeeError):
    status_code, code = 404, "not_found"


class Conflict(RoomeeError):
    status_code, code = 409, "conflict"


class Gone(RoomeeError):
    status_code, code = 410, "gone"


class Unprocessable(RoomeeError):
    status_code, code = 422, "validation_error"


class TooManyRequests(RoomeeError):
    status_code, code = 429, "too_many_requests"


class UpstreamError(RoomeeError):
    """Another service answered with an unexpected error."""

    status_code, code = 502, "upstream_error"


class ServiceUnavailable(RoomeeError):
    """A dependency is down or its circuit breaker is open: fail fast."""

    status_code, code = 503, "service_unavailable"


class ErrorDocument(BaseModel):
    """The body of every error response."""

    error: str = Field(description="Stable machine-readable code, e.g. `not_found`, `invalid_cursor`.")
    detail: Any = Field(default=None, description="Human-readable explanation, or the list of invalid fields.")


_MEANINGS = {
    400: "Bad request.",
    401: "Missing, invalid, expired or revoked token.",
    403: "The caller may not do this (permission, scope or kind of token).",
    404: "Not found, or not visible to the caller.",
    409: "Conflicts with the current state.",
    410: "No longer available (expired or already used).",
    413: "Payload too large.",
    415: "Unsupported media type.",
    422: "Invalid input.",
    429: "Too many requests; retry after `Retry-After` seconds.",
    502: "Another service answered with an error.",
    503: "A dependency is unavailable; retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: the error document for each status it may answer."""
    return {status: {"model": ErrorDocument, "description": _MEANINGS.get(status, "Error.")} for status in statuses}
