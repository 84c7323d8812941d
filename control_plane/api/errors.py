"""Kubernetes `Status` errors, raised anywhere in a handler and rendered in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One entry of Status.details.causes: ``type`` is Kubernetes' cause type
    (FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueDuplicate,
    FieldValueTooLong, FieldValueForbidden, FieldValueTypeInvalid, FieldValueUnknown...),
    ``field`` a path like ``spec.containers[0].name``."""

    field: str
    type: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.type, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    code: int
    reason: str  # StatusReason: NotFound, AlreadyExists, Conflict, Invalid, BadRequest...
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(kind: str | None, name: str | None, group: str = "") -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    return d


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def not_found(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found', _details(plural, name, group))


def already_exists(plural: str, name: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', _details(plural, name, group))


def conflict(plural: str, name: str, why: str, group: str = "") -> ApiError:
    res = f"{plural}.{group}" if group else plural
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res} "{name}": {why}',
                    _details(plural, name, group))


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def invalid(kind: str, name: str, causes: list[Cause], group: str = "") -> ApiError:
    """422 Invalid, message formatted as Kubernetes does:
    ``Pod "x" is invalid: [spec.containers[0].name: Required value, ...]``."""
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    body = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(kind, name, group)
    details["causes"] = [c.to_dict() for c in causes]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {body}', details)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml; got "{content_type}"')


def too_many_requests(message: str) -> ApiError:
    return ApiError(429, "TooManyRequests", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message)
