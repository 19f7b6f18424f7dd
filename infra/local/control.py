"""The supervisor's control API: HTTP on 127.0.0.1, a bearer token from ``supervisor.json``.

    GET  /status                                 replicas, services, rollouts, autoscaler
    PUT  /services/{service}/replicas            {"replicas": n}  (the stable version)
    PUT  /services/{service}/versions/{version}  {"replicas": n}  (any version)
    POST /replicas/{id}/kill                     {"signal": "KILL"}
    POST /rollouts                               a RolloutSpec
    GET  /rollouts/{service}
    POST /rollouts/{service}/abort|promote
    GET  /autoscaler, PUT /autoscaler            {"enabled": true}

Errors are the platform's ``{"error": {"code", "message"}}``; messages are one line.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field

from infra.local.catalog import CatalogError
from infra.local.fleet import FleetError
from infra.local.rollouts.manager import RolloutError
from infra.runtime.models import RolloutSpec, check_version
from services.common.errors import ApiError
from services.common.middleware import error_middleware
from services.common.validation import read_json

if TYPE_CHECKING:
    from infra.local.supervisor import Supervisor

SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")


class Replicas(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: Annotated[int, Field(ge=0, le=50)]


class Kill(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: str = "KILL"


class Switch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


def _auth_middleware(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "send the token from supervisor.json")
        return await handler(request)

    return middleware


def _sup(request: web.Request) -> Supervisor:
    return request.app[SUPERVISOR]


def _known(request: web.Request) -> str:
    name = request.match_info["service"]
    try:
        _sup(request).platform.get(name)
    except CatalogError as exc:
        raise ApiError(404, "unknown_service", str(exc)) from None
    return name


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(_sup(request).snapshot())


async def put_replicas(request: web.Request) -> web.Response:
    name = _known(request)
    body = await read_json(request, Replicas)
    try:
        service = _sup(request).scale(name, body.replicas)
    except (FleetError, RolloutError) as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return web.json_response(service.model_dump())


async def put_version(request: web.Request) -> web.Response:
    name = _known(request)
    version = request.match_info["version"]
    try:
        check_version(version)
    except ValueError as exc:
        raise ApiError(400, "bad_version", str(exc)) from None
    body = await read_json(request, Replicas)
    try:
        _sup(request).fleet.set_desired(name, version, body.replicas)
    except FleetError as exc:
        raise ApiError(409, "refused", str(exc)) from None
    return web.json_response({"service": name, "version": version, "replicas": body.replicas})


async def kill_replica(request: web.Request) -> web.Response:
    body = await read_json(request, Kill)
    try:
        replica = _sup(request).fleet.kill(request.match_info["replica"], body.signal)
    except FleetError as exc:
        raise ApiError(404, "no_replica", str(exc)) from None
    return web.json_response(replica.info().model_dump())


async def post_rollout(request: web.Request) -> web.Response:
    spec = await read_json(request, RolloutSpec)
    try:
        status = _sup(request).rollouts.start(spec)
    except RolloutError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return web.json_response(status.model_dump(), status=202)


async def get_rollout(request: web.Request) -> web.Response:
    name = _known(request)
    status = _sup(request).rollouts.get(name)
    if status is None:
        raise ApiError(404, "no_rollout", f"{name} has had no rollout since the platform started")
    return web.json_response(status.model_dump())


async def rollout_action(request: web.Request) -> web.Response:
    name = _known(request)
    rollouts = _sup(request).rollouts
    action = rollouts.abort if request.match_info["action"] == "abort" else rollouts.promote
    try:
        status = action(name)
    except RolloutError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return web.json_response(status.model_dump())


async def get_autoscaler(request: web.Request) -> web.Response:
    return web.json_response(_sup(request).autoscaler.status().model_dump())


async def put_autoscaler(request: web.Request) -> web.Response:
    body = await read_json(request, Switch)
    autoscaler = _sup(request).autoscaler
    autoscaler.set_enabled(body.enabled)
    return web.json_response(autoscaler.status().model_dump())


def build_control_app(supervisor: Supervisor, token: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware, _auth_middleware(token)])
    app[SUPERVISOR] = supervisor
    app.router.add_get("/status", get_status)
    app.router.add_put("/services/{service}/replicas", put_replicas)
    app.router.add_put("/services/{service}/versions/{version}", put_version)
    app.router.add_post("/replicas/{replica}/kill", kill_replica)
    app.router.add_post("/rollouts", post_rollout)
    app.router.add_get("/rollouts/{service}", get_rollout)
    app.router.add_post("/rollouts/{service}/{action:abort|promote}", rollout_action)
    app.router.add_get("/autoscaler", get_autoscaler)
    app.router.add_put("/autoscaler", put_autoscaler)
    return app
