"""The HTTP routes: the subset of Consul's ``/v1`` API that the platform and py-consul use.

Errors are plain text with Consul's wording and status codes; input a client got wrong is
always a 4xx, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .blocking import QueryResult, is_uint64, parse_query_options, run_blocking
from .checks import CheckManager, NotTTLCheckError
from .definitions import (
    CRITICAL,
    PASSING,
    STATUSES,
    WARNING,
    PayloadError,
    parse_check,
    parse_check_update,
    parse_service,
)
from .errors import ApiError
from .render import (
    agent_self_json,
    agent_service_json,
    catalog_service_json,
    check_json,
    content_hash,
    kv_json,
    member_json,
    node_json,
    node_meta,
    service_json,
)
from .state import Check, Registry, Service, UnknownCheckError, UnknownServiceError

REGISTRY = web.AppKey("registry", Registry)
CHECKS = web.AppKey("checks", CheckManager)

LEADER = "127.0.0.1:8300"
KV_MAX_VALUE_BYTES = 512 * 1024  # Consul's default kv_max_value_size

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.Response(status=exc.status, text=exc.message, content_type="text/plain")
    except PayloadError as exc:
        return web.Response(status=400, text=str(exc), content_type="text/plain")


# -- helpers -------------------------------------------------------------------------------


def _registry(request: web.Request) -> Registry:
    return request.app[REGISTRY]


def _json(request: web.Request, data: Any, *, status: int = 200) -> web.Response:
    if "pretty" in request.query:
        text = json.dumps(data, indent=4) + "\n"
    else:
        text = json.dumps(data, separators=(",", ":"))
    # Bytes, so aiohttp does not append "; charset=utf-8" (Consul sends bare JSON type).
    return web.Response(status=status, body=text.encode(), content_type="application/json")


def _with_meta(response: web.Response, index: int) -> web.Response:
    """The headers Consul puts on every answer of a blocking-capable endpoint."""
    response.headers["X-Consul-Index"] = str(index)
    response.headers["X-Consul-Knownleader"] = "true"
    response.headers["X-Consul-Lastcontact"] = "0"
    response.headers["X-Consul-Effective-Consistency"] = "leader"
    return response


def _check_common(request: web.Request) -> None:
    query = request.query
    datacenter = query.get("dc", "")
    if datacenter and datacenter != _registry(request).node.datacenter:
        raise ApiError(400, "No path to datacenter")
    if "filter" in query:
        # Silently ignoring a filter would answer with data the client did not ask for.
        raise ApiError(400, "?filter is not supported by the development registry")


def _parse_bool(query: Mapping[str, str], name: str, error: str) -> bool:
    """Go's strconv.ParseBool, where a bare ``?name`` means true (as Consul reads it)."""
    if name not in query:
        return False
    value = query.get(name, "")
    if value in ("", "1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ApiError(400, error)


def _parse_uint(value: str, name: str) -> int:
    if not is_uint64(value):
        raise ApiError(400, f"Invalid value for ?{name}: {value!r}")
    return int(value)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "Request decode failed: EOF")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"Request decode failed: {exc}") from None
    except RecursionError:
        raise ApiError(400, "Request decode failed: nested too deeply") from None


async def _blocking(request: web.Request, query: Callable[[], QueryResult]) -> QueryResult:
    _check_common(request)
    options = parse_query_options(request.query)
    return await run_blocking(_registry(request), options, query)


def _node_matches(request: web.Request) -> bool:
    """``?node-meta=key:value`` (repeatable): every pair must match the node's meta."""
    meta = node_meta()
    for pair in request.query.getall("node-meta", []):
        key, _, value = pair.partition(":")
        if meta.get(key) != value:
            return False
    return True


def _has_tags(service: Service, tags: list[str]) -> bool:
    # Consul compares tags case-insensitively; every requested tag must be present.
    own = {tag.lower() for tag in service.tags}
    return all(tag.lower() in own for tag in tags)


def _sorted_checks(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda check: check.check_id)


def _path_value(request: web.Request, name: str, missing: str) -> str:
    value = request.match_info.get(name, "")
    if not value:
        raise ApiError(400, missing)
    return value


# -- status and agent ----------------------------------------------------------------------


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    return _json(request, LEADER)


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return _json(request, [LEADER])


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    return _json(request, agent_self_json(_registry(request)))


@routes.get("/v1/agent/members")
async def agent_members(request: web.Request) -> web.Response:
    return _json(request, [member_json(_registry(request))])


@routes.get("/v1/agent/services")
async def agent_services(request: web.Request) -> web.Response:
    _check_common(request)
    registry = _registry(request)
    datacenter = registry.node.datacenter
    return _json(
        request,
        {s.id: agent_service_json(s, datacenter) for s in registry.agent_services()},
    )


@routes.get("/v1/agent/checks")
async def agent_checks(request: web.Request) -> web.Response:
    _check_common(request)
    registry = _registry(request)
    return _json(
        request, {c.check_id: check_json(c, registry.node) for c in registry.agent_checks()}
    )


@routes.put("/v1/agent/service/register")
async def agent_service_register(request: web.Request) -> web.Response:
    definition = parse_service(await _json_body(request))
    replace = request.query.get("replace-existing-checks")
    _registry(request).register_service(
        definition, replace_existing_checks=replace is not None and replace in ("", "true")
    )
    return web.Response(status=200)


@routes.put("/v1/agent/service/deregister/{service_id:.*}")
async def agent_service_deregister(request: web.Request) -> web.Response:
    service_id = _path_value(request, "service_id", "Missing service ID")
    try:
        _registry(request).deregister_service(service_id)
    except UnknownServiceError:
        raise ApiError(
            404,
            f'Unknown service ID "{service_id}". '
            "Ensure that the service ID is passed, not the service name.",
        ) from None
    return web.Response(status=200)


@routes.get("/v1/agent/service/{service_id:.+}")
async def agent_service(request: web.Request) -> web.Response:
    registry = _registry(request)
    service_id = request.match_info["service_id"]
    service = registry.services.get(service_id)
    if service is None or not service.agent_local:
        raise ApiError(404, f"unknown service ID: {service_id}")
    data = agent_service_json(service, registry.node.datacenter)
    data["ContentHash"] = content_hash(data)
    return _json(request, data)


@routes.put("/v1/agent/check/register")
async def agent_check_register(request: web.Request) -> web.Response:
    definition = parse_check(await _json_body(request), require_name=True)
    assert definition is not None  # require_name never yields an empty check
    try:
        _registry(request).register_check(definition)
    except UnknownServiceError as exc:
        raise ApiError(404, f'ServiceID "{exc.args[0]}" does not exist') from None
    except UnknownCheckError as exc:
        raise ApiError(400, f'Check ID "{exc.args[0]}" is reserved') from None
    return web.Response(status=200)


def _unknown_check(check_id: str) -> ApiError:
    return ApiError(
        404,
        f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.',
    )


@routes.put("/v1/agent/check/deregister/{check_id:.*}")
async def agent_check_deregister(request: web.Request) -> web.Response:
    check_id = _path_value(request, "check_id", "Missing check ID")
    try:
        _registry(request).deregister_check(check_id)
    except UnknownCheckError:
        raise _unknown_check(check_id) from None
    return web.Response(status=200)


def _ttl_update(request: web.Request, check_id: str, status: str, output: str) -> web.Response:
    try:
        request.app[CHECKS].ttl_update(check_id, status, output)
    except UnknownCheckError:
        raise _unknown_check(check_id) from None
    except NotTTLCheckError:
        raise ApiError(400, f'CheckID "{check_id}" does not have associated TTL') from None
    return web.Response(status=200)


@routes.put("/v1/agent/check/{verb:pass|warn|fail}/{check_id:.*}")
async def agent_check_pass_warn_fail(request: web.Request) -> web.Response:
    check_id = _path_value(request, "check_id", "Missing check ID")
    status = {"pass": PASSING, "warn": WARNING, "fail": CRITICAL}[request.match_info["verb"]]
    return _ttl_update(request, check_id, status, request.query.get("note", ""))


@routes.put("/v1/agent/check/update/{check_id:.*}")
async def agent_check_update(request: web.Request) -> web.Response:
    check_id = _path_value(request, "check_id", "Missing check ID")
    update = parse_check_update(await _json_body(request))
    return _ttl_update(request, check_id, update.status, update.output)


# -- health --------------------------------------------------------------------------------


@routes.get("/v1/health/service/{name:.*}")
async def health_service(request: web.Request) -> web.Response:
    name = _path_value(request, "name", "Missing service name")
    passing_only = _parse_bool(request.query, "passing", "Invalid value for ?passing")
    tags = request.query.getall("tag", [])
    on_node = _node_matches(request)
    registry = _registry(request)

    def query() -> QueryResult:
        node = node_json(registry)
        node_checks = registry.node_checks()
        instances = [s for s in registry.service_instances(name) if on_node and _has_tags(s, tags)]
        entries = []
        for service in instances:
            checks = _sorted_checks(node_checks + registry.checks_of_service(service.id))
            # As Consul: ?passing drops an instance if any check, the node's included,
            # is not passing -- warning counts as not passing.
            if passing_only and any(check.status != PASSING for check in checks):
                continue
            entries.append(
                {
                    "Node": node,
                    "Service": service_json(service),
                    "Checks": [check_json(check, registry.node) for check in checks],
                }
            )
        return QueryResult(registry.service_index(name), entries, found=bool(instances))

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


@routes.get("/v1/health/checks/{name:.*}")
async def health_checks(request: web.Request) -> web.Response:
    name = _path_value(request, "name", "Missing service name")
    on_node = _node_matches(request)
    registry = _registry(request)

    def query() -> QueryResult:
        instances = registry.service_instances(name) if on_node else []
        checks = [
            check for service in instances for check in registry.checks_of_service(service.id)
        ]
        body = [check_json(check, registry.node) for check in _sorted_checks(checks)]
        return QueryResult(registry.service_index(name), body, found=bool(checks))

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


@routes.get("/v1/health/state/{state:.*}")
async def health_state(request: web.Request) -> web.Response:
    state = _path_value(request, "state", "Missing check state")
    if state != "any" and state not in STATUSES:
        raise ApiError(400, "Invalid check state")
    on_node = _node_matches(request)
    registry = _registry(request)

    def query() -> QueryResult:
        checks = [c for c in registry.checks.values() if on_node and state in ("any", c.status)]
        body = [check_json(check, registry.node) for check in _sorted_checks(checks)]
        return QueryResult(registry.checks_index(), body)

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


@routes.get("/v1/health/node/{node:.*}")
async def health_node(request: web.Request) -> web.Response:
    node_name = _path_value(request, "node", "Missing node name")
    registry = _registry(request)

    def query() -> QueryResult:
        checks = list(registry.checks.values()) if node_name == registry.node.name else []
        body = [check_json(check, registry.node) for check in _sorted_checks(checks)]
        return QueryResult(registry.checks_index(), body)

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


# -- catalog -------------------------------------------------------------------------------


@routes.get("/v1/catalog/datacenters")
async def catalog_datacenters(request: web.Request) -> web.Response:
    return _json(request, [_registry(request).node.datacenter])


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    registry = _registry(request)

    nodes = [node_json(registry)] if _node_matches(request) else []

    def query() -> QueryResult:
        return QueryResult(registry.nodes_index(), nodes)

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    registry = _registry(request)

    on_node = _node_matches(request)

    def query() -> QueryResult:
        tags: dict[str, set[str]] = {}
        for service in registry.services.values() if on_node else []:
            tags.setdefault(service.name, set()).update(service.tags)
        body = {name: sorted(tags[name]) for name in sorted(tags)}
        return QueryResult(registry.services_index(), body)

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


@routes.get("/v1/catalog/service/{name:.*}")
async def catalog_service(request: web.Request) -> web.Response:
    name = _path_value(request, "name", "Missing service name")
    tags = request.query.getall("tag", [])
    on_node = _node_matches(request)
    registry = _registry(request)

    def query() -> QueryResult:
        matches = [s for s in registry.service_instances(name) if on_node and _has_tags(s, tags)]
        body = [catalog_service_json(service, registry) for service in matches]
        return QueryResult(registry.service_index(name), body, found=bool(matches))

    result = await _blocking(request, query)
    return _with_meta(_json(request, result.body), result.index)


# -- KV ------------------------------------------------------------------------------------


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    query = request.query
    registry = _registry(request)

    if "keys" in query:
        separator = query.get("separator", query.get("seperator", ""))

        def list_keys() -> QueryResult:
            keys = registry.kv_keys(key, separator)
            return QueryResult(registry.kv_prefix_index(key), keys, found=bool(keys))

        result = await _blocking(request, list_keys)
        # Consul answers the root with an empty list, anything else with 404.
        if not result.found and key:
            return _with_meta(web.Response(status=404), result.index)
        return _with_meta(_json(request, result.body), result.index)

    if "recurse" in query:

        def list_entries() -> QueryResult:
            entries = registry.kv_list(key)
            body = [kv_json(entry) for entry in entries]
            return QueryResult(registry.kv_prefix_index(key), body, found=bool(entries))

        result = await _blocking(request, list_entries)
        if not result.found:
            return _with_meta(web.Response(status=404), result.index)
        return _with_meta(_json(request, result.body), result.index)

    if not key:
        raise ApiError(400, "Missing key name")

    def get_one() -> QueryResult:
        entry = registry.kv_get(key)
        return QueryResult(registry.kv_key_index(key), entry, found=entry is not None)

    result = await _blocking(request, get_one)
    entry = result.body
    if entry is None:
        return _with_meta(web.Response(status=404), result.index)
    if "raw" in query:
        # Consul's headers for raw values: never let a browser sniff them into HTML.
        response = web.Response(body=entry.value or b"", content_type="text/plain")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "sandbox"
        return _with_meta(response, result.index)
    return _with_meta(_json(request, [kv_json(entry)]), result.index)


def _conflicting(query: Mapping[str, str], *flags: str) -> None:
    if sum(flag in query for flag in flags) > 1:
        raise ApiError(400, f"Conflicting flags: {'&'.join(f for f in flags if f in query)}")


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    key = _path_value(request, "key", "Missing key name")
    query = request.query
    _check_common(request)
    _conflicting(query, "cas", "acquire", "release")
    if "acquire" in query or "release" in query:
        raise ApiError(400, "Sessions (?acquire, ?release) are not supported by the registry")
    flags = _parse_uint(query["flags"], "flags") if "flags" in query else 0
    cas = _parse_uint(query["cas"], "cas") if "cas" in query else None
    if request.content_length is not None and request.content_length > KV_MAX_VALUE_BYTES:
        raise _too_large(request.content_length)
    value = await request.read()
    if len(value) > KV_MAX_VALUE_BYTES:
        raise _too_large(len(value))
    stored = _registry(request).kv_put(key, value or None, flags=flags, cas=cas)
    return _json(request, stored)


def _too_large(size: int) -> ApiError:
    return ApiError(
        413,
        f"Request body({size} bytes) too large, max size: {KV_MAX_VALUE_BYTES} bytes. "
        "See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
    )


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    query = request.query
    _check_common(request)
    _conflicting(query, "recurse", "cas")
    recurse = "recurse" in query
    if not recurse and not key:
        raise ApiError(400, "Missing key name")
    cas = _parse_uint(query["cas"], "cas") if "cas" in query else None
    return _json(request, _registry(request).kv_delete(key, recurse=recurse, cas=cas))
