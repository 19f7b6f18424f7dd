"""The aiohttp middlewares every app gets, outermost first: request id, metrics, JSON errors,
body-size limit; and the hook that echoes the request id."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sys
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace

from services.common.errors import STATUS_CODES, ApiError, json_error
from services.common.logging import request_id_var
from services.common.metrics import Metrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# A client-supplied id is echoed only if it is short and harmless in logs and headers.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_for(incoming: str) -> str:
    """The caller's request id if it is safe to echo, else a new one: 128 random bits in hex
    (unique, not secret: the PRNG costs a tenth of ``uuid4``'s system call)."""
    if incoming and _SAFE_REQUEST_ID.match(incoming):
        return incoming
    return f"{random.getrandbits(128):032x}"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the caller's ``X-Request-Id`` (or make one) for the logs and the span; every
    response carries it back (see :func:`echo_request_id`)."""
    request_id = request_id_for(request.headers.get(REQUEST_ID_HEADER, ""))
    request["request_id"] = request_id
    token = request_id_var.set(request_id)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("http.request.id", request_id)
    try:
        return await handler(request)
    finally:
        request_id_var.reset(token)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: runs just before headers go out, so streamed responses
    (Server-Sent Events) carry the id too."""
    request_id = request.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id


def route_template(request: web.Request) -> str:
    """The route's template (``/orders/{id}``), never the raw path: bounded label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: Metrics) -> Middleware:
    in_flight = metrics.http_in_flight.labels(**metrics.base)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PROBE_PATHS:
            # Probes and scrapes are not load: counting them would skew the autoscaler.
            return await handler(request)
        started = time.perf_counter()
        status = 500
        in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            in_flight.dec()
            route = route_template(request)
            method = request.method
            metrics.child(metrics.http_requests, route, method, str(status)).inc()
            metrics.child(metrics.http_latency, route, method).observe(
                time.perf_counter() - started
            )

    return middleware


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    default_text = f"{exc.status}: {exc.reason}"
    message = exc.text if exc.text and exc.text != default_text else exc.reason
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    code = STATUS_CODES.get(exc.status, "error")
    return json_error(exc.status, code, message.lower(), headers=headers)


def _unavailable(exc: Exception) -> bool:
    """``services.common.redis.REDIS_UNAVAILABLE``, without importing redis here: a process
    that never loaded redis cannot be raising its errors, and the console and the supervisor
    use this middleware without needing the client (about 9 MB each)."""
    errors = sys.modules.get("redis.exceptions")
    if errors is not None and isinstance(exc, (errors.ConnectionError, errors.TimeoutError)):
        return True
    return isinstance(exc, OSError)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": {"code", "message"}}``; Redis being unreachable is a
    503 with ``Retry-After``; unexpected exceptions become a 500 that names nothing of the
    internals (the log line has the traceback)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if _unavailable(exc):
            # The store is away, not the request's fault: a retry elsewhere may well succeed.
            log.warning("redis unavailable: %s", exc, extra={"path": request.path})
            return json_error(
                503, "unavailable", "a dependency is unavailable", headers={"Retry-After": "1"}
            )
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return json_error(500, "internal_error", "internal server error")


def body_limit_middleware(max_bytes: int) -> Middleware:
    """Refuse a declared oversized body before reading any of it; bodies without a length
    are cut off by the app's ``client_max_size`` while being read."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise ApiError(
                413, "payload_too_large", f"the body is {length} bytes; the limit is {max_bytes}"
            )
        return await handler(request)

    return middleware
