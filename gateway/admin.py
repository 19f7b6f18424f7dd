"""The admin API under ``/admin``: routes, instances, ejections and traffic weights.

It takes a separate bearer token (``GATEWAY_ADMIN_TOKEN``), never a client API key. Weights
are written to Consul KV, not kept here, so every gateway replica applies the same change
through its own watch within a second.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel

from gateway.discovery import TRAFFIC_PREFIX, Discovery, WeightsError, parse_weights
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from services.common.app import CONSUL, SETTINGS
from services.common.errors import ApiError
from services.common.openapi import Route
from services.common.validation import INTEGRAL, read_json

DISCOVERY = web.AppKey("discovery", Discovery)
ROUTES = web.AppKey("routes", RouteTable)


def _weights_schema(schema: dict[str, Any]) -> None:
    # Names checked by propertyNames, so that additionalProperties covers every weight and
    # "not all 0" can be said: not (every value is 0). parse_weights checks the same.
    weight = next(iter(schema.pop("patternProperties").values()))
    schema |= {
        "propertyNames": {"pattern": r"^v\d+$"},
        "additionalProperties": weight,
        "not": {"additionalProperties": {"const": 0}},
    }


Version = Annotated[str, Field(pattern=r"^v\d+$")]
Weight = Annotated[int, Field(ge=0, le=100), INTEGRAL]


class Weights(RootModel[Annotated[dict[Version, Weight], Field(min_length=1)]]):
    """``{"v1": 90, "v2": 10}``: integer weights 0-100 per version, not all of them 0."""

    model_config = ConfigDict(strict=True, json_schema_extra=_weights_schema)


class TrafficOut(BaseModel):
    service: str
    weights: dict[str, int] | None
    instances: dict[str, int]
    error: str | None = None


class TrafficList(RootModel[list[TrafficOut]]):
    """Weights and instances per version of every routed service."""


class TrafficSet(BaseModel):
    service: str
    weights: dict[str, int]
    note: str


class TrafficCleared(BaseModel):
    service: str
    weights: None


class RouteOut(BaseModel):
    prefix: str
    service: str
    upstream: str
    timeout_s: float | None
    retry: Literal["safe", "never"]
    methods: list[str]


class RouteList(RootModel[list[RouteOut]]):
    """The route table, longest prefix first."""


class InstanceOut(BaseModel):
    id: str
    address: str
    version: str
    outstanding: int
    requests: int
    failures: int
    ejections: int
    ejected_for_s: float


class PoolOut(BaseModel):
    strategy: str
    weights: dict[str, int] | None
    instances: list[InstanceOut]


class Instances(RootModel[dict[str, PoolOut]]):
    """Instances per routed service."""


class EjectionOut(InstanceOut):
    service: str


class Ejections(RootModel[list[EjectionOut]]):
    """Instances ejected right now."""


def _require_admin(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    assert isinstance(settings, GatewaySettings)
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "missing_admin_token", "send Authorization: Bearer <admin token>")
    scheme, _, token = header.partition(" ")
    expected = settings.GATEWAY_ADMIN_TOKEN.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ApiError(403, "invalid_admin_token", "the admin token is not valid")


def _service(request: web.Request) -> str:
    name = request.match_info["service"]
    if name not in request.app[DISCOVERY].pools:
        raise ApiError(404, "unknown_service", f"{name!r} is not a routed service")
    return name


def _traffic(discovery: Discovery, name: str) -> dict[str, Any]:
    return TrafficOut(
        service=name,
        weights=discovery.weights.get(name),
        instances=discovery.pools[name].versions(),
        error=discovery.weight_errors.get(name),
    ).model_dump()


async def get_routes(request: web.Request) -> web.Response:
    _require_admin(request)
    return web.json_response([r.to_json() for r in request.app[ROUTES].routes])


async def get_instances(request: web.Request) -> web.Response:
    _require_admin(request)
    discovery = request.app[DISCOVERY]
    out = {}
    for name, pool in discovery.pools.items():
        now = pool.clock()
        out[name] = {
            "strategy": pool.strategy,
            "weights": discovery.weights.get(name),
            "instances": [i.to_json(now) for i in pool.instances.values()],
        }
    return web.json_response(out)


async def get_ejections(request: web.Request) -> web.Response:
    _require_admin(request)
    discovery = request.app[DISCOVERY]
    out = []
    for name, pool in discovery.pools.items():
        now = pool.clock()
        out += [
            {"service": name, **i.to_json(now)} for i in pool.instances.values() if i.ejected(now)
        ]
    return web.json_response(out)


async def get_all_traffic(request: web.Request) -> web.Response:
    _require_admin(request)
    discovery = request.app[DISCOVERY]
    return web.json_response([_traffic(discovery, name) for name in sorted(discovery.pools)])


async def get_traffic(request: web.Request) -> web.Response:
    _require_admin(request)
    return web.json_response(_traffic(request.app[DISCOVERY], _service(request)))


async def put_traffic(request: web.Request) -> web.Response:
    _require_admin(request)
    name = _service(request)
    weights = await read_json(request, Weights)
    document = json.dumps(weights.root, sort_keys=True)
    try:
        parse_weights(document)
    except WeightsError as exc:
        raise ApiError(
            422,
            "invalid_weights",
            str(exc),
            details=[{"field": "body", "message": str(exc), "type": "invalid_weights"}],
        ) from None
    await request.app[CONSUL].kv.put(TRAFFIC_PREFIX + name, document)
    return web.json_response(
        {"service": name, "weights": weights.root, "note": "applied by every gateway's watch"}
    )


async def delete_traffic(request: web.Request) -> web.Response:
    _require_admin(request)
    name = _service(request)
    await request.app[CONSUL].kv.delete(TRAFFIC_PREFIX + name)
    return web.json_response({"service": name, "weights": None})


_SERVICE_ERRORS = {404: "Not a routed service"}


def _admin(method: str, path: str, handler: Any, summary: str, **more: Any) -> Route:
    return Route(
        method,
        path,
        handler,
        summary,
        auth=("adminBearer",),
        tags=("admin",),
        uses_redis=False,
        **more,
    )


def admin_routes() -> list[Route]:
    return [
        _admin("GET", "/admin/routes", get_routes, "The route table", response=RouteList),
        _admin(
            "GET",
            "/admin/instances",
            get_instances,
            "Instances per service with their load",
            response=Instances,
        ),
        _admin(
            "GET",
            "/admin/ejections",
            get_ejections,
            "Instances ejected right now",
            response=Ejections,
        ),
        _admin(
            "GET",
            "/admin/traffic",
            get_all_traffic,
            "Weights of every service",
            response=TrafficList,
        ),
        _admin(
            "GET",
            "/admin/traffic/{service}",
            get_traffic,
            "Weights of one service",
            response=TrafficOut,
            errors=_SERVICE_ERRORS,
        ),
        _admin(
            "PUT",
            "/admin/traffic/{service}",
            put_traffic,
            "Set the weights (Consul KV; every gateway applies them)",
            body=Weights,
            response=TrafficSet,
            errors={**_SERVICE_ERRORS, 422: "Not weights: versions like v1, integers 0-100"},
        ),
        _admin(
            "DELETE",
            "/admin/traffic/{service}",
            delete_traffic,
            "Remove the weights",
            response=TrafficCleared,
            errors=_SERVICE_ERRORS,
        ),
    ]
