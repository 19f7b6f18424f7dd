"""The request path through the gateway: route, authenticate, limit, pick, forward, retry.

Retries follow three rules. A connect failure is retried for any method, because the request
never left the gateway. A 502/503 answer or a dropped connection is retried only for a safe
method or a request carrying an ``Idempotency-Key``, since the upstream may have acted on it.
Every retry needs a token from the shared :class:`RetryBudget`, so retries cannot multiply
the load of an upstream that is already failing.

Paths outside ``/api`` (probes, metrics, ``/admin``, the OpenAPI document) belong to the
gateway's own aiohttp app, the control plane, which listens on a private Unix socket; they are
passed to it as they are.

Tracing: a SERVER span per request (a child of the client's ``traceparent``, if any) and a
CLIENT span per upstream attempt, whose context goes upstream in ``traceparent``. A request
the sampler drops still passes its (unsampled) context on, so the services drop it too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Gauge

from gateway.accesslog import AccessLog
from gateway.balancer import Instance, Pool
from gateway.budget import RetryBudget
from gateway.discovery import Discovery
from gateway.headers import HOP_BY_HOP, RESPONSE_DROP, forwarded, lines, response_connection
from gateway.headers import REQUEST_DROP as _REQUEST_DROP
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import RateLimiter
from gateway.routes import Route, RouteTable
from gateway.server import ClientConnection, Request
from gateway.settings import GatewaySettings
from gateway.spans import ProxySpan, RecordedSpan, Spans
from gateway.upstream import Answer, Failure, UpstreamConnection, UpstreamError, UpstreamPool
from services.common.errors import ApiError
from services.common.metrics import LabelCache
from services.common.middleware import request_id_for
from services.common.redis import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

VERSION_HEADER = "X-Mesh-Version"
UPSTREAM_VERSION_HEADER = "X-Mesh-Upstream-Version"
_VERSION = re.compile(r"^v\d{1,4}$")
_RETRY_STATUSES = frozenset({502, 503})
_FAILURE_STATUSES = frozenset({500, 502, 503, 504})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Characters kept as they are when a decoded path is encoded again for the upstream.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_REQUEST_DROP_TRACED = _REQUEST_DROP | {b"traceparent"}
_CONTROL_DROP = HOP_BY_HOP | {b"content-length", b"expect", b"x-forwarded-for"}
# The upstream echoes the X-Request-Id the gateway sent; the gateway adds it to every answer.
_PROXIED_DROP = RESPONSE_DROP | {b"x-request-id"}
CONTROL_TIMEOUT = 30.0


@dataclass(slots=True)
class Attempt:
    instance: Instance
    answer: Answer | None = None
    streamed: bool = False
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
        *,
        in_flight: Gauge | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.discovery = discovery
        self.metrics = metrics
        self.limiter = limiter
        self.in_flight = in_flight
        self.access_log = access_log
        self.keys = tuple(k.encode() for k in settings.api_keys)
        self.budget = RetryBudget(
            ratio=settings.GATEWAY_RETRY_BUDGET_RATIO,
            min_per_second=settings.GATEWAY_RETRY_MIN_PER_SECOND,
        )
        self.cache = LabelCache()
        self.tracing = not settings.OTEL_SDK_DISABLED
        self.spans = (
            Spans(trace.get_tracer_provider().get_tracer("gateway")) if self.tracing else None
        )
        self.propagator = TraceContextTextMapPropagator()
        self.upstreams: UpstreamPool | None = None
        # Set by the front once the control plane listens (see gateway.app).
        self.control_address: str | None = None
        # The Allow value of a public path (from the public document), asked on a 405 only.
        self.allow_for: Callable[[str], str | None] = lambda path: None

    async def open(self) -> None:
        self.upstreams = UpstreamPool(
            limit=self.settings.GATEWAY_UPSTREAM_CONNECTIONS,
            connect_timeout=self.settings.GATEWAY_CONNECT_TIMEOUT,
        )

    async def close(self) -> None:
        if self.upstreams is not None:
            self.upstreams.close()
        if self.access_log is not None:
            self.access_log.flush()

    def tick(self) -> None:
        """Once a second: write the access log, close upstream connections idle too long."""
        if self.access_log is not None:
            self.access_log.flush()
        if self.upstreams is not None:
            self.upstreams.reap()

    # -- entry -------------------------------------------------------------------------------
    async def handle(self, conn: ClientConnection, request: Request) -> None:
        url = request.url
        if url[:1] != b"/":
            # Absolute-form targets ("GET http://elsewhere/") would make this an open proxy.
            conn.send_error(400, "invalid_target", "the request target must be a path")
            return
        raw_path, _, query = url.partition(b"?")
        if raw_path == b"/api" or raw_path.startswith(b"/api/"):
            await self._proxy(conn, request, raw_path, query)
        else:
            await self._control(conn, request)

    # -- the checks before any upstream ------------------------------------------------------
    def _reject(self, reason: str, status: int, message: str, **headers: str) -> ApiError:
        self.cache(self.metrics.rejected, reason).inc()
        return ApiError(status, reason, message, headers=headers)

    def _route(self, method: str, raw_path: bytes) -> tuple[Route, str]:
        """The route and the upstream target path (re-encoded when the client encoded it)."""
        try:
            text = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise self._reject("invalid_path", 400, "the path must be ASCII") from None
        path = text
        if "%" in text:
            if "%2f" in text.lower():
                raise self._reject("invalid_path", 400, "encoded slashes are refused")
            path = unquote(text)
        # The path starts with "/", so a dot segment always follows one.
        if "/." in path and any(segment in (".", "..") for segment in path.split("/")):
            raise self._reject("invalid_path", 400, "dot segments and encoded slashes are refused")
        route = self.table.match(path)
        if route is None:
            raise self._reject("no_route", 404, f"no route for {path}")
        if method not in route.methods:
            raise self._reject(
                "method_not_allowed",
                405,
                f"{method} is not allowed on {route.prefix}",
                Allow=self.allow_for(path) or ", ".join(sorted(route.methods)),
            )
        target = route.upstream_path(path)
        if path is not text:
            target = quote(target, safe=_PATH_SAFE)
        return route, target

    def _authenticate(self, request: Request) -> str:
        given = request.lookup.get(b"x-api-key", b"")
        if not given:
            raise self._reject("missing_api_key", 401, "send your API key in X-API-Key")
        # Compare against every key, always, so timing does not reveal a prefix match.
        matched = False
        for known in self.keys:
            matched |= hmac.compare_digest(given, known)
        if not matched:
            raise self._reject("invalid_api_key", 403, "the API key is not valid")
        return given.decode("latin-1")

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

    # -- tracing -----------------------------------------------------------------------------
    def _server_span(self, request: Request, raw_path: bytes) -> ProxySpan:
        if self.spans is None:
            return INVALID_SPAN
        parent = None
        traceparent = request.lookup.get(b"traceparent")
        if traceparent is not None:
            carrier = {"traceparent": traceparent.decode("latin-1")}
            tracestate = request.lookup.get(b"tracestate")
            if tracestate is not None:
                carrier["tracestate"] = tracestate.decode("latin-1")
            parent = self.propagator.extract(carrier)
        span = self.spans.start(request.method, SpanKind.SERVER, parent)
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": request.method,
                    "url.path": raw_path.decode("latin-1"),
                    "url.scheme": "http",
                    "client.address": request.peer,
                    "user_agent.original": request.header(b"user-agent") or "",
                }
            )
        return span

    def _traceparent(
        self, server: ProxySpan, instance: Instance, method: str
    ) -> tuple[ProxySpan, bytes]:
        """The attempt's CLIENT span (when sampled) and the ``traceparent`` to send."""
        span = server
        if isinstance(server, RecordedSpan):
            assert self.spans is not None
            span = self.spans.child(
                server,
                method,
                SpanKind.CLIENT,
                {
                    "http.request.method": method,
                    "server.address": instance.address,
                    "server.port": instance.port,
                    "mesh.upstream.instance": instance.id,
                    "mesh.upstream.version": instance.version,
                },
            )
        context = span.get_span_context()
        if not context.is_valid:
            return span, b""
        value = b"00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)
        return span, value

    # -- forwarding ------------------------------------------------------------------------
    async def _proxy(
        self, conn: ClientConnection, request: Request, raw_path: bytes, query: bytes
    ) -> None:
        started = time.perf_counter()
        method = request.method
        head = method == "HEAD"
        request_id = request_id_for(request.header(b"x-request-id") or "").encode()
        echo = b"X-Request-Id: " + request_id + b"\r\n"
        span = self._server_span(request, raw_path)
        if self.in_flight is not None:
            self.in_flight.inc()
        route: Route | None = None
        attempt: Attempt | None = None
        attempts = 0
        status = 500
        try:
            route, target = self._route(method, raw_path)
            if span.is_recording():
                # "POST /api/orders" reads better in a trace than the bare method.
                span.update_name(f"{method} {route.prefix}")
                span.set_attribute("http.route", route.prefix)
            key = self._authenticate(request)
            if self.limiter is not None and not self.limiter.take_local(key):
                await self._rate_limit(key)
            pin = request.header(b"x-mesh-version")
            if pin is not None and not _VERSION.match(pin):
                raise self._reject("invalid_version", 400, f"{VERSION_HEADER} must look like v2")
            if query:
                target += "?" + query.decode("latin-1")
            attempt, attempts = await self._forward(conn, request, route, target, pin, span, echo)
            status = self._answer(conn, request, route, pin, attempt, echo, head)
        except ApiError as exc:
            status = exc.status
            extra = [f"{k}: {v}\r\n".encode() for k, v in exc.headers.items()]
            conn.send_error(status, exc.code, exc.message, headers=[*extra, echo], head=head)
        finally:
            if self.in_flight is not None:
                self.in_flight.dec()
            elapsed = time.perf_counter() - started
            version = attempt.instance.version if attempt is not None else "none"
            if route is not None:
                self.metrics.requests.inc((route.prefix, route.service, version, str(status)))
                self.metrics.latency.observe((route.prefix, route.service, version), elapsed)
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            if self.access_log is not None:
                self._log_access(
                    request, raw_path, status, route, attempt, attempts, elapsed, span, request_id
                )

    async def _forward(
        self,
        conn: ClientConnection,
        request: Request,
        route: Route,
        target: str,
        pin: str | None,
        span: ProxySpan,
        echo: bytes,
    ) -> tuple[Attempt | None, int]:
        pool = self.discovery.pools[route.service]
        weights = self.discovery.weights.get(route.service)
        may_retry = route.may_retry(request.method, b"idempotency-key" in request.lookup)
        drop = _REQUEST_DROP_TRACED if self.tracing else _REQUEST_DROP
        common = _passed_on(request, drop, request.lookup.get(b"host"))
        common.append(echo)
        body = request.body
        start_line = f"{request.method} {target} HTTP/1.1\r\n".encode("latin-1")

        self.budget.record_request()
        tried: set[str] = set()
        attempt: Attempt | None = None
        for number in range(1, self.settings.GATEWAY_MAX_ATTEMPTS + 1):
            instance = pool.choose(weights, pin, tried)
            if instance is None:
                break
            tried.add(instance.id)
            client_span, traceparent = self._traceparent(span, instance, request.method)
            head = [start_line, instance.host_line]
            if traceparent:
                head.append(b"traceparent: " + traceparent + b"\r\n")
            data = b"".join([*head, *common, b"\r\n", body])
            attempt = await self._attempt(conn, request, route, pool, instance, data, echo)
            if client_span is not span:
                if attempt.status:
                    client_span.set_attribute("http.response.status_code", attempt.status)
                if attempt.failure or attempt.status >= 500:
                    client_span.set_status(Status(StatusCode.ERROR, attempt.failure or ""))
                client_span.end()
            if attempt.streamed or (
                attempt.answer is not None and attempt.status not in _RETRY_STATUSES
            ):
                break
            reason = attempt.failure or str(attempt.status)
            retry_allowed = attempt.failure == "connect" or (
                may_retry and attempt.failure != "timeout"
            )
            if not retry_allowed or number == self.settings.GATEWAY_MAX_ATTEMPTS:
                break
            if not self.budget.try_spend():
                self.cache(self.metrics.budget_exhausted, route.prefix, route.service).inc()
                break
            self.cache(self.metrics.retries, route.prefix, route.service, reason).inc()
        return attempt, len(tried)

    async def _attempt(
        self,
        conn: ClientConnection,
        request: Request,
        route: Route,
        pool: Pool,
        instance: Instance,
        data: bytes,
        echo: bytes,
    ) -> Attempt:
        assert self.upstreams is not None
        attempt = Attempt(instance)
        pool.begin(instance)
        started = time.perf_counter()
        ok = False
        try:
            if route.timeout is None:
                await self._stream(conn, route, instance, data, attempt, echo)
            else:
                attempt.answer = await self.upstreams.exchange(
                    (instance.address, instance.port),
                    data,
                    timeout=route.timeout,
                    head_only=request.method == "HEAD",
                )
                attempt.status = attempt.answer.status
            ok = attempt.status not in _FAILURE_STATUSES
        except UpstreamError as exc:
            attempt.failure = exc.failure
            attempt.error = (
                f"no answer within {route.timeout}s" if exc.failure == "timeout" else str(exc)
            )
        finally:
            if pool.end(instance, ok):
                self.cache(self.metrics.ejections, route.service, instance.id).inc()
                log.warning("ejected", extra={"upstream": route.service, "instance": instance.id})
            outcome = "ok" if ok else (attempt.failure or str(attempt.status))
            self.metrics.attempts.observe(
                (route.service, instance.version, outcome), time.perf_counter() - started
            )
        return attempt

    async def _stream(
        self,
        conn: ClientConnection,
        route: Route,
        instance: Instance,
        data: bytes,
        attempt: Attempt,
        echo: bytes,
    ) -> None:
        """Relay a long-lived answer (Server-Sent Events) chunk by chunk until either side
        ends; the answer belongs to the client from its first byte, so it is never retried."""
        assert self.upstreams is not None
        relay = _Relay(conn, route, instance, echo)
        upstream, end = await self.upstreams.open_stream(
            (instance.address, instance.port), data, relay
        )
        relay.upstream = upstream
        attempt.streamed = True
        attempt.status = relay.status
        gone = asyncio.get_running_loop().create_future()

        def client_gone() -> None:
            if not gone.done():
                gone.set_result(None)

        conn.on_close.append(client_gone)
        try:
            await asyncio.wait((end, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.on_close.remove(client_gone)
        if end.done() and end.exception() is None:
            conn.end_chunks()
        else:
            if not end.done():
                end.cancel()
            upstream.close()
            # A stream cut by the upstream ends like a finished one; an SSE client reconnects.
            conn.end_chunks()
        self.upstreams.release(upstream)

    def _answer(
        self,
        conn: ClientConnection,
        request: Request,
        route: Route,
        pin: str | None,
        attempt: Attempt | None,
        echo: bytes,
        head: bool,
    ) -> int:
        """Write the answer (unless it was streamed) and return its status."""
        if attempt is None:
            which = f"{route.service} {pin}" if pin else route.service
            self.cache(self.metrics.rejected, "no_healthy_upstream").inc()
            raise ApiError(
                503,
                "no_healthy_upstream",
                f"no healthy instance of {which} can serve this request",
                headers={"Retry-After": "1"},
            )
        if attempt.streamed:
            return attempt.status
        version = attempt.instance.version
        if attempt.answer is not None:
            answer = attempt.answer
            out = lines(answer.headers, _PROXIED_DROP, response_connection(answer.headers))
            _rewrite_location(out, route)
            out.append(b"X-Mesh-Upstream-Version: " + version.encode() + b"\r\n")
            out.append(echo)
            conn.send(answer.status, out, answer.body, head=head)
            return answer.status
        status, code = (
            (504, "upstream_timeout") if attempt.failure == "timeout" else (502, "bad_gateway")
        )
        raise ApiError(
            status,
            code,
            f"{route.service} did not answer ({attempt.failure}: {attempt.error})",
            headers={UPSTREAM_VERSION_HEADER: version, "Retry-After": "1"},
        )

    def _log_access(
        self,
        request: Request,
        raw_path: bytes,
        status: int,
        route: Route | None,
        attempt: Attempt | None,
        attempts: int,
        elapsed: float,
        span: ProxySpan,
        request_id: bytes,
    ) -> None:
        assert self.access_log is not None
        context = span.get_span_context()
        valid = context.is_valid
        self.access_log.write(
            method=request.method,
            path=raw_path.decode("latin-1"),
            status=status,
            route=route.prefix if route else None,
            upstream=attempt.instance.id if attempt else None,
            upstream_version=attempt.instance.version if attempt else "none",
            attempts=attempts,
            duration_ms=elapsed * 1000,
            client=request.peer,
            request_id=request_id.decode("latin-1"),
            trace_id=format(context.trace_id, "032x") if valid else None,
            span_id=format(context.span_id, "016x") if valid else None,
        )

    # -- the control plane -----------------------------------------------------------------
    async def _control(self, conn: ClientConnection, request: Request) -> None:
        """Pass a request for the gateway's own app (probes, metrics, admin) through."""
        assert self.upstreams is not None and self.control_address is not None
        head = request.method == "HEAD"
        parts = [request.method.encode() + b" " + request.url + b" HTTP/1.1\r\n"]
        parts += _passed_on(request, _CONTROL_DROP, None)
        parts += [b"\r\n", request.body]
        try:
            answer = await self.upstreams.exchange(
                self.control_address, b"".join(parts), timeout=CONTROL_TIMEOUT, head_only=head
            )
        except UpstreamError as exc:
            log.error("control plane did not answer: %s", exc)
            conn.send_error(
                503, "unavailable", "the gateway is not ready", headers=[b"Retry-After: 1\r\n"]
            )
            return
        conn.send(
            answer.status,
            lines(answer.headers, RESPONSE_DROP, response_connection(answer.headers)),
            answer.body,
            head=head,
            length=_declared_length(answer) if head else None,
        )


class _Relay:
    """Writes a streamed upstream answer to the client, pausing the upstream while the
    client's socket buffer is full."""

    def __init__(
        self, conn: ClientConnection, route: Route, instance: Instance, echo: bytes
    ) -> None:
        self.conn = conn
        self.route = route
        self.instance = instance
        self.echo = echo
        self.upstream: UpstreamConnection | None = None
        self.status = 0
        self._paused = False

    def head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        out = lines(headers, _PROXIED_DROP, response_connection(headers))
        _rewrite_location(out, self.route)
        out.append(b"X-Mesh-Upstream-Version: " + self.instance.version.encode() + b"\r\n")
        out.append(self.echo)
        self.conn.send_head(status, out)

    def chunk(self, data: bytes) -> None:
        self.conn.send_chunk(data)
        paused = self.conn.write_paused
        upstream = self.upstream
        if self._paused or paused is None or upstream is None or upstream.transport is None:
            return
        # The client reads slower than the upstream writes: stop reading until it catches up.
        self._paused = True
        transport = upstream.transport
        transport.pause_reading()

        def resume(_: object) -> None:
            self._paused = False
            if not transport.is_closing():
                transport.resume_reading()

        paused.add_done_callback(resume)


def _passed_on(request: Request, drop: frozenset[bytes], host: bytes | None) -> list[bytes]:
    """The header lines that go on with a request: the client's, less ``drop`` and what its
    Connection header lists, plus X-Forwarded-* and the body's length."""
    out = lines(request.headers, drop, request.lookup.get(b"connection"))
    out += forwarded(request.lookup.get(b"x-forwarded-for"), request.peer, host)
    if request.body or request.method in _BODY_METHODS:
        out.append(b"Content-Length: %d\r\n" % len(request.body))
    return out


def _declared_length(answer: Answer) -> int | None:
    for name, value in answer.headers:
        if name.lower() == b"content-length" and value.isdigit():
            return int(value)
    return None


def _rewrite_location(out: list[bytes], route: Route) -> None:
    """``Location: /orders/42`` from the orders service becomes ``/api/orders/42``."""
    upstream = route.upstream.encode()
    for index, line in enumerate(out):
        if line[:9].lower() == b"location:":
            location = line[9:].strip()
            if location == upstream or location.startswith(upstream + b"/"):
                new = route.prefix.encode() + location[len(upstream) :]
                out[index] = b"Location: " + new + b"\r\n"
