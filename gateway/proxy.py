"""The request path through the gateway: route, authenticate, limit, pick, forward, retry.

Retries follow three rules. A connect failure is retried for any method, because the request
never left the gateway. A 502/503 answer or a dropped connection is retried only for a safe
method or a request carrying an ``Idempotency-Key``, since the upstream may have acted on it.
Every retry needs a token from the shared :class:`RetryBudget`, so retries cannot multiply
the load of an upstream that is already failing.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import trace

from gateway.balancer import Instance, Pool
from gateway.budget import RetryBudget
from gateway.discovery import Discovery
from gateway.headers import client_response_headers, upstream_request_headers
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import RateLimiter
from gateway.routes import Route, RouteTable
from gateway.settings import GatewaySettings
from services.common.errors import ApiError
from services.common.metrics import LabelCache
from services.common.redis import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)
access_log = logging.getLogger("gateway.access")

VERSION_HEADER = "X-Mesh-Version"
UPSTREAM_VERSION_HEADER = "X-Mesh-Upstream-Version"
_VERSION = re.compile(r"^v\d{1,4}$")
_RETRY_STATUSES = frozenset({502, 503})
_FAILURE_STATUSES = frozenset({500, 502, 503, 504})

Failure = Literal["connect", "disconnect", "timeout"]


@dataclass
class Attempt:
    instance: Instance
    response: web.StreamResponse | None = None
    status: int = 0
    failure: Failure | None = None
    error: str = ""


class Proxy:
    def __init__(
        self,
        settings: GatewaySettings,
        table: RouteTable,
        discovery: Discovery,
        metrics: GatewayMetrics,
        limiter: RateLimiter | None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.discovery = discovery
        self.metrics = metrics
        self.limiter = limiter
        self.keys = tuple(k.encode() for k in settings.api_keys)
        self.budget = RetryBudget(
            ratio=settings.GATEWAY_RETRY_BUDGET_RATIO,
            min_per_second=settings.GATEWAY_RETRY_MIN_PER_SECOND,
        )
        self.session: aiohttp.ClientSession | None = None
        self.cache = LabelCache()

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.GATEWAY_UPSTREAM_CONNECTIONS,
            limit_per_host=0,
            keepalive_timeout=30,
            enable_cleanup_closed=True,
        )
        # Bodies pass through as they are: no decompression, no cookie jar, no redirects.
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- the checks before any upstream ------------------------------------------------------
    def _reject(self, reason: str, status: int, message: str, **headers: str) -> ApiError:
        self.metrics.rejected.labels(reason).inc()
        return ApiError(status, reason, message, headers=headers)

    def _route(self, request: web.Request) -> Route:
        path = request.path
        if any(segment in (".", "..") for segment in path.split("/")) or "%2f" in (
            request.raw_path.lower()
        ):
            raise self._reject("invalid_path", 400, "dot segments and encoded slashes are refused")
        route = self.table.match(path)
        if route is None:
            raise self._reject("no_route", 404, f"no route for {path}")
        if request.method not in route.methods:
            allow = ", ".join(sorted(route.methods))
            raise self._reject(
                "method_not_allowed",
                405,
                f"{request.method} is not allowed on {route.prefix}",
                Allow=allow,
            )
        return route

    def _authenticate(self, request: web.Request) -> str:
        key = request.headers.get("X-API-Key", "")
        if not key:
            raise self._reject("missing_api_key", 401, "send your API key in X-API-Key")
        given = key.encode()
        # Compare against every key, always, so timing does not reveal a prefix match.
        matched = False
        for known in self.keys:
            matched |= hmac.compare_digest(given, known)
        if not matched:
            raise self._reject("invalid_api_key", 403, "the API key is not valid")
        return key

    async def _rate_limit(self, key: str) -> None:
        if self.limiter is None:
            return
        try:
            decision = await self.limiter.check(key)
        except REDIS_UNAVAILABLE as exc:
            # Fail open: losing the limiter must not take the shop down with it.
            log.warning("rate limiter unavailable: %s", exc)
            return
        if not decision.allowed:
            raise self._reject(
                "rate_limited",
                429,
                "too many requests for this API key; slow down",
                **{"Retry-After": str(decision.retry_after_s)},
            )

    # -- forwarding ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route = self._route(request)
        span = trace.get_current_span()
        if span.is_recording():
            # "POST /api/orders" reads better in a trace than the catch-all "/api/{tail}".
            span.update_name(f"{request.method} {route.prefix}")
            span.set_attribute("http.route", route.prefix)
        key = self._authenticate(request)
        await self._rate_limit(key)
        pin = request.headers.get(VERSION_HEADER)
        if pin is not None and not _VERSION.match(pin):
            raise self._reject("invalid_version", 400, f"{VERSION_HEADER} must look like v2")
        body = await request.read() if request.body_exists else None

        pool = self.discovery.pools[route.service]
        weights = self.discovery.weights.get(route.service)
        may_retry = route.may_retry(request.method, "Idempotency-Key" in request.headers)
        headers = upstream_request_headers(
            request.headers, request.remote, request.scheme, request.host
        )
        if "request_id" in request:
            headers["X-Request-Id"] = request["request_id"]
        target = route.upstream_path(request.path)
        if request.query_string:
            target += "?" + request.rel_url.raw_query_string

        self.budget.record_request()
        tried: set[str] = set()
        attempt: Attempt | None = None
        for number in range(1, self.settings.GATEWAY_MAX_ATTEMPTS + 1):
            instance = pool.choose(weights, pin, tried)
            if instance is None:
                break
            tried.add(instance.id)
            attempt = await self._attempt(request, route, pool, instance, target, headers, body)
            if attempt.response is not None and attempt.status not in _RETRY_STATUSES:
                break
            reason = attempt.failure or str(attempt.status)
            retry_allowed = attempt.failure == "connect" or (
                may_retry and attempt.failure != "timeout"
            )
            if not retry_allowed or number == self.settings.GATEWAY_MAX_ATTEMPTS:
                break
            if not self.budget.try_spend():
                self.metrics.budget_exhausted.labels(route.prefix, route.service).inc()
                break
            self.metrics.retries.labels(route.prefix, route.service, reason).inc()

        try:
            response = self._answer(route, pin, attempt)
        except ApiError as exc:
            response = exc.response()
        version = attempt.instance.version if attempt is not None else "none"
        elapsed = time.perf_counter() - started
        self.cache(
            self.metrics.requests, route.prefix, route.service, version, str(response.status)
        ).inc()
        self.cache(self.metrics.latency, route.prefix, route.service, version).observe(elapsed)
        if self.settings.GATEWAY_ACCESS_LOG:
            access_log.info(
                "access",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "route": route.prefix,
                    "upstream": attempt.instance.id if attempt else None,
                    "upstream_version": version,
                    "attempts": len(tried),
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": request.remote,
                },
            )
        return response

    def _answer(self, route: Route, pin: str | None, attempt: Attempt | None) -> web.StreamResponse:
        if attempt is None:
            which = f"{route.service} {pin}" if pin else route.service
            self.metrics.rejected.labels("no_healthy_upstream").inc()
            raise ApiError(
                503,
                "no_healthy_upstream",
                f"no healthy instance of {which} can serve this request",
                headers={"Retry-After": "1"},
            )
        if attempt.response is not None:
            attempt.response.headers[UPSTREAM_VERSION_HEADER] = attempt.instance.version
            return attempt.response
        status, code = (
            (504, "upstream_timeout")
            if attempt.failure == "timeout"
            else (
                502,
                "bad_gateway",
            )
        )
        raise ApiError(
            status,
            code,
            f"{route.service} did not answer ({attempt.failure}: {attempt.error})",
            headers={UPSTREAM_VERSION_HEADER: attempt.instance.version, "Retry-After": "1"},
        )

    async def _attempt(
        self,
        request: web.Request,
        route: Route,
        pool: Pool,
        instance: Instance,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | None,
    ) -> Attempt:
        assert self.session is not None
        attempt = Attempt(instance)
        timeout = aiohttp.ClientTimeout(
            total=route.timeout, sock_connect=self.settings.GATEWAY_CONNECT_TIMEOUT
        )
        pool.begin(instance)
        started = time.perf_counter()
        ok = False
        try:
            upstream = await self.session.request(
                request.method,
                instance.url + target,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
            )
            async with upstream:
                attempt.status = upstream.status
                ok = upstream.status not in _FAILURE_STATUSES
                out_headers = client_response_headers(upstream.headers)
                _rewrite_location(out_headers, route)
                if route.timeout is None:
                    attempt.response = await _stream(request, upstream, out_headers, instance)
                else:
                    payload = await upstream.read()
                    attempt.response = web.Response(
                        status=upstream.status, body=payload, headers=out_headers
                    )
        except aiohttp.ClientConnectorError as exc:
            attempt.failure, attempt.error = "connect", str(exc.os_error or exc)
        except TimeoutError:
            attempt.failure, attempt.error = "timeout", f"no answer within {route.timeout}s"
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            attempt.failure, attempt.error = "disconnect", type(exc).__name__
        except aiohttp.ClientError as exc:
            attempt.failure, attempt.error = "disconnect", f"{type(exc).__name__}: {exc}"
        finally:
            if pool.end(instance, ok):
                self.metrics.ejections.labels(route.service, instance.id).inc()
                log.warning("ejected", extra={"upstream": route.service, "instance": instance.id})
            outcome = "ok" if ok else (attempt.failure or str(attempt.status))
            self.cache(self.metrics.attempts, route.service, instance.version, outcome).observe(
                time.perf_counter() - started
            )
        return attempt


def _rewrite_location(headers: CIMultiDict[str], route: Route) -> None:
    """``Location: /orders/42`` from the orders service becomes ``/api/orders/42``."""
    location = headers.get("Location")
    if location and (location == route.upstream or location.startswith(route.upstream + "/")):
        headers["Location"] = route.prefix + location[len(route.upstream) :]


async def _stream(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: CIMultiDict[str],
    instance: Instance,
) -> web.StreamResponse:
    """Relay a long-lived answer (Server-Sent Events) chunk by chunk until either side ends."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    response.headers[UPSTREAM_VERSION_HEADER] = instance.version
    if "request_id" in request:
        response.headers["X-Request-Id"] = request["request_id"]
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (ConnectionResetError, aiohttp.ClientError):
        pass  # one side went away: the stream simply ends
    await response.write_eof()
    return response
