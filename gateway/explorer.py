"""What the gateway serves about its public API: ``GET /openapi.json`` (the document
:mod:`gateway.contract` keeps current) and ``GET /docs``, an API explorer (Swagger UI,
vendored under ``gateway/www``: no CDN, no Node.js) where a user pastes the API key and tries
every operation."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pydantic import RootModel

from gateway.contract import Contract
from services.common.errors import ApiError
from services.common.openapi import Route

CONTRACT = web.AppKey("contract", Contract)
WWW = Path(__file__).with_name("www")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".html": "text/html"}
# Everything the page loads comes from this origin; Swagger UI sets inline styles. Nothing
# may frame the page (the key a user pastes in it is theirs).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SAFETY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _assets() -> dict[str, tuple[bytes, str]]:
    """The files the page needs, read once: name -> (bytes, content type)."""
    files = [WWW / "explorer.js", WWW / "explorer.css", *sorted((WWW / "swagger-ui").glob("*"))]
    out = {}
    for path in files:
        kind = TYPES.get(path.suffix)
        if kind is not None:
            out[str(path.relative_to(WWW))] = (path.read_bytes(), kind)
    return out


class OpenApiDocument(RootModel[dict[str, object]]):
    """An OpenAPI 3.1 document."""


class Page(RootModel[str]):
    """An HTML page."""


class Asset(RootModel[str]):
    """A script, stylesheet or icon of the page."""


def explorer_routes() -> list[Route]:
    assets = _assets()
    page = (WWW / "index.html").read_bytes()

    async def public_document(request: web.Request) -> web.Response:
        return web.Response(
            body=request.app[CONTRACT].body,
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    async def docs(request: web.Request) -> web.Response:
        headers = {**SAFETY, "Content-Security-Policy": PAGE_POLICY, "X-Frame-Options": "DENY"}
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=headers)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise ApiError(404, "not_found", f"no asset {request.match_info['name']}")
        body, kind = found
        headers = {**SAFETY, "Cache-Control": "public, max-age=3600"}
        return web.Response(body=body, content_type=kind, headers=headers)

    tags = ("public api",)
    return [
        Route(
            "GET",
            "/openapi.json",
            public_document,
            "The public API's OpenAPI document (built from the routed services' own)",
            response=OpenApiDocument,
            tags=tags,
            uses_redis=False,
        ),
        Route(
            "GET",
            "/docs",
            docs,
            "The API explorer (Swagger UI): paste the API key, try every operation",
            response=Page,
            response_content_type="text/html",
            tags=tags,
            uses_redis=False,
        ),
        Route(
            "GET",
            "/docs/assets/{name:.+}",
            asset,
            "A file of the API explorer",
            response=Asset,
            response_content_type="*/*",
            tags=tags,
            uses_redis=False,
        ),
    ]
