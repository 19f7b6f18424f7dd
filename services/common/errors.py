"""The one error shape of the platform: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

# Codes for statuses raised by aiohttp itself (unknown route, wrong method, body too large).
STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


def error_body(code: str, message: str, details: Sequence[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    details: Sequence[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON error response; ``headers`` for ``Allow``, ``Retry-After`` and the like."""
    return web.json_response(
        error_body(code, message, details), status=status, headers=dict(headers or {})
    )


class ApiError(Exception):
    """Raise from a handler to answer with a JSON error; the error middleware renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Sequence[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_error(
            self.status, self.code, self.message, details=self.details, headers=self.headers
        )
