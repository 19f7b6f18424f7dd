"""The gateway: its control plane (an aiohttp app with the kit's probes, metrics and errors,
and the admin API) and its data plane (the proxy behind its own HTTP listener).

Clients reach one port, the listener's. It serves ``/api`` itself and passes every other
path to the control plane, which listens on a Unix socket in a private directory.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.accesslog import AccessLog
from gateway.admin import DISCOVERY, ROUTES, admin_routes
from gateway.balancer import OutlierPolicy
from gateway.contract import Contract
from gateway.discovery import Discovery
from gateway.explorer import CONTRACT, explorer_routes
from gateway.metrics import DiscoveryCollector, GatewayMetrics
from gateway.proxy import Proxy
from gateway.ratelimit import RateLimiter
from gateway.routes import RouteTable
from gateway.server import FrontServer
from gateway.settings import GatewaySettings
from services.common.app import CONSUL, LIFECYCLE, METRICS, REDIS, ReadinessCheck, create_app

PROXY = web.AppKey("proxy", Proxy)
GATEWAY_SETTINGS = web.AppKey("gateway_settings", GatewaySettings)

DESCRIPTION = (
    "The gateway's own API: probes, metrics, the public API's document (/openapi.json) and "
    "explorer (/docs), and the admin API (/admin/*, Authorization: Bearer <admin token>). "
    "The public API itself (/api/*) is described in /openapi.json."
)


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[GATEWAY_SETTINGS]
    table = app[ROUTES]
    discovery = Discovery(
        app[CONSUL],
        table.services,
        strategy=settings.GATEWAY_LB,
        policy=OutlierPolicy(
            consecutive_failures=settings.GATEWAY_EJECT_AFTER,
            base_ejection=settings.GATEWAY_EJECT_BASE,
            max_ejection=settings.GATEWAY_EJECT_MAX,
            max_ejected_percent=settings.GATEWAY_MAX_EJECTED_PERCENT,
            panic_threshold_percent=settings.GATEWAY_PANIC_THRESHOLD_PERCENT,
        ),
    )
    registry = app[METRICS].registry
    metrics = GatewayMetrics(registry)
    registry.register(DiscoveryCollector(discovery))
    limiter = None
    if settings.GATEWAY_RATE_LIMIT_RPS > 0:
        limiter = RateLimiter(
            app[REDIS], settings.GATEWAY_RATE_LIMIT_BURST, settings.GATEWAY_RATE_LIMIT_RPS
        )
    kit_metrics = app[METRICS]
    proxy = Proxy(
        settings,
        table,
        discovery,
        metrics,
        limiter,
        in_flight=kit_metrics.http_in_flight.labels(**kit_metrics.base),
        access_log=(
            AccessLog(settings.SERVICE_NAME, settings.SERVICE_VERSION)
            if settings.GATEWAY_ACCESS_LOG
            else None
        ),
    )
    await proxy.open()
    contract = Contract(
        table, discovery, title="mesh shop public API", version=settings.SERVICE_VERSION
    )
    # Only a 405 asks (which methods a path takes): never a request that is served.
    proxy.allow_for = contract.allow
    discovery.start()
    contract.start()
    app[DISCOVERY] = discovery
    app[PROXY] = proxy
    app[CONTRACT] = contract

    async def synced() -> bool:
        return discovery.synced

    # Not ready (and so not in Consul's passing set) until it knows every upstream.
    app[LIFECYCLE].checks["discovery"] = ReadinessCheck(synced)
    yield
    await contract.stop()
    await discovery.stop()
    await proxy.close()


def build(settings: GatewaySettings) -> web.Application:
    if not settings.CONSUL_HTTP_ADDR:
        raise SystemExit("config error: CONSUL_HTTP_ADDR: the gateway discovers upstreams there")
    table = RouteTable.load(settings.GATEWAY_ROUTES_FILE)
    app = create_app(
        settings,
        routes=[*explorer_routes(), *admin_routes()],
        use_kafka=False,
        faults=False,
        title="mesh gateway (admin)",
        description=DESCRIPTION,
        openapi_path="/admin/openapi.json",
    )
    app[GATEWAY_SETTINGS] = settings
    app[ROUTES] = table
    app.cleanup_ctx.append(_gateway_ctx)
    return app


class Front:
    """The data plane's listener on ``HOST:PORT``, and the control plane's private socket."""

    def __init__(self, server: FrontServer, directory: str) -> None:
        self.server = server
        self.directory = directory

    async def close(self, timeout: float) -> None:
        await self.server.stop(timeout)
        shutil.rmtree(self.directory, ignore_errors=True)


async def listen(runner: web.AppRunner) -> Front:
    """The kit's ``serve`` calls this once the control plane has started (its cleanup
    contexts ran, so the proxy exists)."""
    app = runner.app
    settings = app[GATEWAY_SETTINGS]
    proxy = app[PROXY]
    directory = tempfile.mkdtemp(prefix="mesh-gateway-")  # mode 0700: ours alone
    path = os.path.join(directory, "control.sock")
    await web.UnixSite(runner, path).start()
    proxy.control_address = path
    server = FrontServer(
        proxy.handle,
        max_body=settings.MAX_BODY_BYTES,
        on_refused=lambda code: proxy.cache(proxy.metrics.rejected, code).inc(),
    )
    server.tick_hooks.append(proxy.tick)
    try:
        await server.start(settings.HOST, settings.PORT)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    # Everything built so far lives as long as the process: the cyclic collector need not
    # walk it again on every full collection (a few percent of CPU per request under load).
    gc.freeze()
    return Front(server, directory)
