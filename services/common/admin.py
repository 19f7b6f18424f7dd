"""The admin-token check for operator routes (``PUT /stock/{sku}`` and the like)."""

from __future__ import annotations

import hmac

from aiohttp import web

from services.common.errors import ApiError
from services.common.settings import ServiceSettings


def require_admin(request: web.Request, settings: ServiceSettings) -> None:
    """Accept ``Authorization: Bearer <ADMIN_TOKEN>`` or ``X-Admin-Token: <ADMIN_TOKEN>``.

    401 without a token, 403 with a wrong one; with no ``ADMIN_TOKEN`` configured the admin
    routes are closed (403) rather than open.
    """
    given = request.headers.get("X-Admin-Token", "")
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not given:
        raise ApiError(
            401,
            "unauthorized",
            "an admin token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.ADMIN_TOKEN.get_secret_value() if settings.ADMIN_TOKEN else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "forbidden", "the admin token is not valid")
