"""Typed errors for API replies, built from the server's `Status` body.

Callers catch the meaning (`NotFound`, `Conflict`, `Gone`...) instead of comparing
status codes; the original Status stays available as ``exc.status``.
"""

from __future__ import annotations

from typing import Any


class ApiClientError(Exception):
    """Base of everything the client raises on purpose."""


class ApiConnectionError(ApiClientError):
    """The server could not be reached (or the connection broke) after all retries."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class ApiStatusError(ApiClientError):
    """The server answered with a failure Status (HTTP code >= 400, or a watch ERROR event)."""

    def __init__(self, code: int, reason: str, message: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.status: dict[str, Any] = status if status is not None else {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, reason={self.reason!r}, message={self.message!r})"

    @property
    def details(self) -> dict[str, Any]:
        details = self.status.get("details")
        return details if isinstance(details, dict) else {}

    @property
    def retry_after(self) -> float | None:
        seconds = self.details.get("retryAfterSeconds")
        return float(seconds) if isinstance(seconds, int | float) else None


class BadRequest(ApiStatusError):
    pass


class Unauthorized(ApiStatusError):
    pass


class Forbidden(ApiStatusError):
    pass


class NotFound(ApiStatusError):
    pass


class Conflict(ApiStatusError):
    """409 with reason Conflict: a stale resourceVersion on update."""


class AlreadyExists(Conflict):
    """409 with reason AlreadyExists: create of a name that is taken."""


class Gone(ApiStatusError):
    """410: the requested resourceVersion is too old; relist."""


class Invalid(ApiStatusError):
    pass


class TooManyRequests(ApiStatusError):
    pass


class ServerError(ApiStatusError):
    pass


_BY_CODE: dict[int, type[ApiStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}

_DEFAULT_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def error_from_status(status: dict[str, Any] | None, http_code: int | None = None, body: str = "") -> ApiStatusError:
    """Build the most specific error for a Status body (or, lacking one, an HTTP code and text)."""
    status = status if isinstance(status, dict) and status.get("kind") == "Status" else None
    code = http_code or 0
    if status is not None and isinstance(status.get("code"), int) and status["code"]:
        code = status["code"]
    reason = str(status.get("reason") or "") if status else ""
    reason = reason or _DEFAULT_REASONS.get(code, "Unknown")
    message = str(status.get("message") or "") if status else ""
    if not message:
        text = body.strip()
        message = text if text else f"the server responded with HTTP {code} ({reason})"
    cls: type[ApiStatusError]
    if code == 409 and reason == "AlreadyExists":
        cls = AlreadyExists
    elif code in _BY_CODE:
        cls = _BY_CODE[code]
    elif code >= 500:
        cls = ServerError
    else:
        cls = ApiStatusError
    if status is None:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}
    return cls(code, reason, message, status)
