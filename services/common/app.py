"""The app factory every service (and the gateway) is built with, and ``run``, its entrypoint.

``create_app`` wires the kit around a service's routes and Kafka handlers: probes, metrics,
the OpenAPI document, middlewares, and the resources (Redis, the Kafka producer and outbox
relay, the consumer runner, the fault watch, the Consul registration), each opened and closed
by an ``app.cleanup_ctx`` generator and reachable through a typed ``web.AppKey``.

``run`` serves the app and performs the graceful shutdown of DESIGN.md on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import consul.aio
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, RootModel

from services.common.consul import ConsulRegistration, consul_client
from services.common.defects import Leak, Warmup, defects_middleware
from services.common.errors import error_body
from services.common.faults import FaultInjector, FaultSettings, fault_middleware
from services.common.kafka.consumer import ConsumerRunner, Handler
from services.common.kafka.outbox import Outbox, OutboxRelay
from services.common.kafka.producer import EventProducer
from services.common.logging import setup_logging
from services.common.metrics import Metrics
from services.common.middleware import (
    body_limit_middleware,
    echo_request_id,
    error_middleware,
    metrics_middleware,
    request_id_middleware,
)
from services.common.openapi import Route, build_openapi
from services.common.redis import create_redis, redis_ready
from services.common.settings import ServiceSettings, load_settings
from services.common.tracing import setup_tracing

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
Probe = Callable[[], Awaitable[bool]]


@dataclass
class ReadinessCheck:
    probe: Probe
    # A non-critical check is reported in /readyz but does not make the instance unready.
    critical: bool = True


@dataclass
class Lifecycle:
    """Readiness state and the first steps of a graceful shutdown."""

    grace: float
    draining: bool = False
    started: bool = False
    warmup: Warmup = field(default_factory=lambda: Warmup(0.0))
    leak: Leak = field(default_factory=lambda: Leak(0, 0))
    deadline: float | None = None
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    # Run (concurrently) when draining starts, before the listener closes: deregistration
    # and stopping the consumers.
    drain_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def remaining(self, reserve: float = 0.5) -> float:
        """Seconds left of the grace period (keeping ``reserve``), or half of it if the app
        is being stopped by something other than :func:`run`."""
        if self.deadline is None:
            return self.grace / 2
        return max(self.deadline - time.monotonic() - reserve, 0.1)

    async def drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace
        await asyncio.gather(*(hook() for hook in self.drain_hooks), return_exceptions=True)


SETTINGS = web.AppKey("settings", ServiceSettings)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
REDIS = web.AppKey("redis", aioredis.Redis)
PRODUCER = web.AppKey("producer", EventProducer)
OUTBOX = web.AppKey("outbox", Outbox)
CONSUMER = web.AppKey("consumer", ConsumerRunner)
FAULTS = web.AppKey("faults", FaultInjector)
CONSUL = web.AppKey("consul", consul.aio.Consul)
REGISTRATION = web.AppKey("registration", ConsulRegistration)


# --- probes ---------------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    error: dict[str, str] | None = None


class MetricsText(RootModel[str]):
    """Prometheus' text exposition format."""


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    lifecycle = request.app[LIFECYCLE]
    names = list(lifecycle.checks)
    timeout = min(0.8, request.app[SETTINGS].CHECK_TIMEOUT * 0.8)
    results = await asyncio.gather(
        *(_run_probe(lifecycle.checks[name].probe, timeout) for name in names)
    )
    checks = {name: "ok" if ok else "unreachable" for name, ok in zip(names, results, strict=True)}
    failed = [
        n for n, ok in zip(names, results, strict=True) if not ok and lifecycle.checks[n].critical
    ]
    if lifecycle.draining:
        status, reason = "draining", "the instance is shutting down"
    elif not lifecycle.started:
        status, reason = "starting", "the instance is starting"
    elif not lifecycle.warmup.warm.is_set():
        status, reason = "warming", f"warming up ({lifecycle.warmup.remaining:.1f}s left)"
    elif failed:
        status, reason = "not_ready", f"unreachable: {', '.join(failed)}"
    else:
        return web.json_response({"status": "ready", "checks": checks})
    body = {"status": status, "checks": checks, **error_body("not_ready", reason)}
    return web.json_response(body, status=503)


async def _run_probe(probe: Probe, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(probe(), timeout)
    except Exception:
        return False


async def metrics_handler(request: web.Request) -> web.Response:
    payload, content_type = request.app[METRICS].render()
    return web.Response(body=payload, headers={"Content-Type": content_type})


def _kit_routes() -> list[Route]:
    return [
        Route(
            "GET",
            "/healthz",
            healthz,
            "Liveness",
            response=Health,
            tags=("probes",),
            uses_redis=False,
        ),
        Route(
            "GET",
            "/readyz",
            readyz,
            "Readiness: dependencies reachable and not draining",
            response=Readiness,
            errors={503: "Not ready (starting, draining or a dependency unreachable)"},
            tags=("probes",),
            uses_redis=False,
        ),
        Route(
            "GET",
            "/metrics",
            metrics_handler,
            "Prometheus metrics (text exposition format)",
            response=MetricsText,
            response_content_type="text/plain",
            tags=("probes",),
            uses_redis=False,
        ),
    ]


# --- resources, each opened and closed by one cleanup context ----------------------------


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = create_redis(
        settings.REDIS_URL,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        client_name=settings.instance_id,
    )
    app[REDIS] = client
    app[LIFECYCLE].checks["redis"] = ReadinessCheck(lambda: redis_ready(client))
    yield
    await client.aclose()


async def _kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    producer = EventProducer(settings, app[METRICS])
    app[PRODUCER] = producer
    app[OUTBOX] = Outbox(settings.SERVICE_NAME)
    # Not critical: with the outbox, requests are still accepted while the broker is away.
    app[LIFECYCLE].checks["kafka"] = ReadinessCheck(producer.probe, critical=False)
    relay = OutboxRelay(
        app[REDIS],
        producer,
        app[METRICS],
        service=settings.SERVICE_NAME,
        consumer=settings.instance_id,
        batch_size=settings.OUTBOX_BATCH_SIZE,
        claim_idle=settings.OUTBOX_CLAIM_IDLE,
    )
    relay.start()
    yield
    # In-flight requests have finished by now: publish what they wrote, within the grace.
    await relay.stop(flush_timeout=app[LIFECYCLE].remaining(reserve=1.0))
    await producer.stop()


def _consumer_ctx(
    handlers: Mapping[str, Handler],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        runner = ConsumerRunner(
            app[SETTINGS],
            handlers,
            redis=app[REDIS],
            producer=app[PRODUCER],
            outbox=app[OUTBOX],
            metrics=app[METRICS],
            faults=app.get(FAULTS),
        )
        app[CONSUMER] = runner
        app[LIFECYCLE].drain_hooks.append(runner.stop)
        runner.start()
        yield
        await runner.stop()

    return ctx


async def _consul_client_ctx(app: web.Application) -> AsyncIterator[None]:
    client = consul_client(app[SETTINGS].CONSUL_HTTP_ADDR)
    app[CONSUL] = client
    yield
    await client.close()


async def _faults_ctx(app: web.Application) -> AsyncIterator[None]:
    injector = app[FAULTS]
    injector.start(app[CONSUL])
    yield
    await injector.stop()


async def _registration_ctx(app: web.Application) -> AsyncIterator[None]:
    registration = ConsulRegistration(app[CONSUL], app[SETTINGS])
    app[REGISTRATION] = registration
    if app[SETTINGS].READINESS_PROBE == "http":
        # Taken out first, so nothing new arrives while it drains. Without a readiness
        # probe it stays in until the way out (below), after it stopped listening.
        app[LIFECYCLE].drain_hooks.append(registration.stop)
    registration.start()
    yield
    await registration.stop()


async def _started_ctx(app: web.Application) -> AsyncIterator[None]:
    app[LIFECYCLE].started = True
    # The last startup step: the listener opens right after it, and the warm-up with it.
    app[LIFECYCLE].warmup.start()
    yield


# --- the factory ----------------------------------------------------------------------------


def create_app(
    settings: ServiceSettings,
    *,
    routes: Sequence[Route] = (),
    handlers: Mapping[str, Handler] | None = None,
    use_redis: bool = True,
    use_kafka: bool = True,
    register: bool = True,
    faults: bool = True,
    title: str | None = None,
    description: str = "",
    middlewares: Sequence[Middleware] = (),
    openapi_path: str = "/openapi.json",
) -> web.Application:
    """Build a service's app.

    ``routes`` are served and documented in ``openapi_path``; ``handlers`` maps topics to
    Kafka handlers run by one consumer group named after the service. ``use_kafka`` (the
    producer, the outbox and its relay) and ``handlers`` need ``use_redis``. ``register`` and
    ``faults`` need ``CONSUL_HTTP_ADDR``; they are skipped when it is empty. Extra
    ``middlewares`` run innermost, after the fault injection.
    """
    if (use_kafka or handlers) and not use_redis:
        raise ValueError("Kafka and consumers need Redis (outbox and processed markers)")
    if handlers and not use_kafka:
        raise ValueError("consumers need use_kafka (the producer publishes to the DLQ)")
    metrics = Metrics(settings.SERVICE_NAME, settings.SERVICE_VERSION)
    with_consul = bool(settings.CONSUL_HTTP_ADDR)
    baseline = FaultSettings(
        latency_ms=settings.FAULT_LATENCY_MS, error_rate=settings.FAULT_ERROR_RATE
    )
    injector = None
    if faults and (with_consul or baseline.active):
        injector = FaultInjector(
            settings.SERVICE_NAME, metrics, baseline, version=settings.SERVICE_VERSION
        )

    chain: list[Middleware] = [
        request_id_middleware,
        metrics_middleware(metrics),
        error_middleware,
        body_limit_middleware(settings.MAX_BODY_BYTES),
    ]
    warmup = Warmup(settings.WARMUP_SECONDS)
    leak = Leak(settings.LEAK_BYTES_PER_REQUEST, settings.LEAK_MAX_BYTES)
    if settings.WARMUP_SECONDS > 0 or settings.LEAK_BYTES_PER_REQUEST > 0:
        chain.append(defects_middleware(warmup, leak))
    if injector is not None:
        chain.append(fault_middleware(injector))
    chain.extend(middlewares)
    app = web.Application(middlewares=chain, client_max_size=settings.MAX_BODY_BYTES)
    app.on_response_prepare.append(echo_request_id)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIFECYCLE] = Lifecycle(grace=settings.SHUTDOWN_GRACE_SECONDS, warmup=warmup, leak=leak)

    all_routes = [*_kit_routes(), *routes]
    document = build_openapi(
        title=title or settings.SERVICE_NAME,
        version=settings.SERVICE_VERSION,
        description=description,
        routes=all_routes,
    )

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    for route in all_routes:
        if route.method == "GET":
            # HEAD too, as HTTP expects of every GET (a load balancer's probe may send it).
            app.router.add_get(route.path, route.handler)
        else:
            app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get(openapi_path, openapi)

    # Order matters: contexts are entered in this order and left in reverse, so the
    # registration goes first at shutdown and the clients everything depends on go last.
    if with_consul:
        app.cleanup_ctx.append(_consul_client_ctx)
    if use_redis:
        app.cleanup_ctx.append(_redis_ctx)
    if use_kafka:
        app.cleanup_ctx.append(_kafka_ctx)
    if injector is not None:
        app[FAULTS] = injector
        if with_consul:
            app.cleanup_ctx.append(_faults_ctx)
    if handlers:
        app.cleanup_ctx.append(_consumer_ctx(handlers))
    if register and with_consul:
        app.cleanup_ctx.append(_registration_ctx)
    app.cleanup_ctx.append(_started_ctx)
    return app


# --- running --------------------------------------------------------------------------------


class Listener(Protocol):
    """A listener of the app's own in front of the aiohttp runner (the gateway's data plane)."""

    async def close(self, timeout: float) -> None:
        """Stop accepting; finish the requests in progress within ``timeout`` seconds."""


Listen = Callable[[web.AppRunner], Awaitable[Listener]]


async def serve(app: web.Application, listen: Listen | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; return the exit code.

    The sequence (DESIGN.md): readiness false; deregister from Consul and stop the consumers
    (the batch in progress is finished and committed); stop listening; finish in-flight
    requests; flush the outbox relay and close the clients. It must all fit in
    ``SHUTDOWN_GRACE_SECONDS``; past that the process exits anyway.

    ``listen``, if given, takes the place of the TCP site: it is called once the app has
    started and serves ``HOST:PORT`` itself (and the runner wherever it chooses).
    """
    settings = app[SETTINGS]
    lifecycle = app[LIFECYCLE]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("aiohttp.access") if settings.ACCESS_LOG else None,
        # In-flight requests get at most half the grace period; the rest is for flushing.
        shutdown_timeout=settings.SHUTDOWN_GRACE_SECONDS / 2,
    )
    await runner.setup()
    listener: Listener | None = None
    try:
        if listen is None:
            site = web.TCPSite(
                runner, settings.HOST, settings.PORT, backlog=1024, reuse_address=True
            )
            await site.start()
        else:
            listener = await listen(runner)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.HOST, settings.PORT, exc)
        await runner.cleanup()
        return 1
    log.info("listening", extra={"host": settings.HOST, "port": settings.PORT})

    await stop.wait()
    log.info("draining", extra={"grace_seconds": settings.SHUTDOWN_GRACE_SECONDS})
    watchdog = loop.call_later(settings.SHUTDOWN_GRACE_SECONDS, _exit_now)
    await lifecycle.drain()
    if listener is not None:
        await listener.close(settings.SHUTDOWN_GRACE_SECONDS / 2)
    await runner.cleanup()
    watchdog.cancel()
    log.info("stopped")
    return 0


def _exit_now() -> None:
    log.error("graceful shutdown exceeded SHUTDOWN_GRACE_SECONDS; exiting")
    logging.shutdown()
    os._exit(1)


def run(
    build: Callable[[S], web.Application], settings_class: type[S], listen: Listen | None = None
) -> None:
    """Entrypoint of ``python -m services.<name>``: settings (exit 2 on a bad value),
    logging, tracing, then :func:`serve` the app ``build`` returns (through ``listen``)."""
    settings = load_settings(settings_class)
    setup_logging(settings.SERVICE_NAME, settings.SERVICE_VERSION, settings.LOG_LEVEL)
    provider = setup_tracing(settings)

    async def main() -> int:
        return await serve(build(settings), listen)

    try:
        if settings.EVENT_LOOP == "uvloop":
            import uvloop

            code = uvloop.run(main())
        else:
            code = asyncio.run(main())
    finally:
        if provider is not None:
            # Bounded, unlike provider.shutdown() (30 s): an unreachable collector must not
            # hold the exit past the grace period. The exporter thread is a daemon.
            provider.force_flush(timeout_millis=2000)
    sys.exit(code)


__all__ = [
    "CONSUL",
    "CONSUMER",
    "FAULTS",
    "LIFECYCLE",
    "METRICS",
    "OUTBOX",
    "PRODUCER",
    "REDIS",
    "REGISTRATION",
    "SETTINGS",
    "Lifecycle",
    "Listen",
    "Listener",
    "ReadinessCheck",
    "Route",
    "create_app",
    "run",
    "serve",
]
