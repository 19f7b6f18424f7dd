"""An upstream for the gateway's tests, built with the service kit and run as a real process.

Every path answers with JSON that says which instance and version served it and what arrived
(method, path, query, headers, body size). ``?status=N`` answers N, ``?delay_ms=N`` waits
first, ``/stream`` sends Server-Sent Events, and ``POST /control/fail`` ``{"status": 500}``
makes every later answer fail until ``{"status": 0}``. Its OpenAPI document names
``GET /orders/{id}``, and from v2 on ``POST /orders`` too: two versions that disagree.

    SERVICE_NAME=gw-orders SERVICE_VERSION=v2 PORT=9001 python tests/gateway/echo_upstream.py
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from pydantic import BaseModel

from services.common.app import SETTINGS, create_app, run
from services.common.openapi import Route
from services.common.settings import ServiceSettings

FAIL = web.AppKey("fail", list)


class EchoSettings(ServiceSettings):
    SERVICE_NAME: str = "echo"


async def control_fail(request: web.Request) -> web.Response:
    request.app[FAIL][0] = int((await request.json())["status"])
    return web.json_response({"fail": request.app[FAIL][0]})


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for n in range(int(request.query.get("events", "3"))):
        await response.write(f"event: tick\ndata: {n}\n\n".encode())
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def echo(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    failing = request.app[FAIL][0]
    if failing:
        return web.json_response({"error": {"code": "forced", "message": "forced"}}, status=failing)
    # ``delay_port=N``: only the instance listening on N waits (the others answer at once).
    if "delay_ms" in request.query and request.query.get("delay_port", str(settings.PORT)) == str(
        settings.PORT
    ):
        await asyncio.sleep(int(request.query["delay_ms"]) / 1000)
    body = await request.read()
    status = int(request.query.get("status", "200"))
    headers = {"Location": request.path} if request.method == "POST" else {}
    headers["Connection"] = "keep-alive, X-Upstream-Secret"
    headers["X-Upstream-Secret"] = "hop-by-hop, must not reach the client"
    return web.json_response(
        {
            "instance": settings.instance_id,
            "version": settings.SERVICE_VERSION,
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_bytes": len(body),
            "body": json.loads(body) if body[:1] == b"{" else None,
        },
        status=status,
        headers=headers,
    )


class Echoed(BaseModel):
    instance: str
    version: str
    method: str
    path: str


def documented(version: str) -> list[Route]:
    routes = [Route("GET", "/orders/{id}", echo, "Echo", response=Echoed, uses_redis=False)]
    if version != "v1":
        routes.append(Route("POST", "/orders", echo, "Echo a POST", uses_redis=False))
    return routes


def build(settings: EchoSettings) -> web.Application:
    app = create_app(
        settings,
        routes=documented(settings.SERVICE_VERSION),
        use_redis=False,
        use_kafka=False,
        faults=False,
    )
    app[FAIL] = [0]
    app.router.add_post("/control/fail", control_fail)
    app.router.add_get("/{prefix}/stream", stream)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


if __name__ == "__main__":
    run(build, EchoSettings)
