"""The gateway's app: the kit's probes, metrics and errors, the admin API, and the proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.admin import DISCOVERY, ROUTES, admin_routes
from gateway.balancer import OutlierPolicy
from gateway.discovery import Discovery
from gateway.metrics import DiscoveryCollector, GatewayMetrics
from gateway.proxy import Proxy
from gateway.ratelimit import RateLimiter
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from services.common.app import CONSUL, LIFECYCLE, METRICS, REDIS, ReadinessCheck, create_app

PROXY = web.AppKey("proxy", Proxy)
GATEWAY_SETTINGS = web.AppKey("gateway_settings", GatewaySettings)

DESCRIPTION = (
    "Public entry of the shop. /api/* is proxied to the service the route table names; "
    "clients send X-API-Key. /admin/* takes Authorization: Bearer <admin token>."
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
    proxy = Proxy(settings, table, discovery, metrics, limiter)
    await proxy.open()
    discovery.start()
    app[DISCOVERY] = discovery
    app[PROXY] = proxy

    async def synced() -> bool:
        return discovery.synced

    # Not ready (and so not in Consul's passing set) until it knows every upstream.
    app[LIFECYCLE].checks["discovery"] = ReadinessCheck(synced)
    yield
    await discovery.stop()
    await proxy.close()


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY].handle(request)


def build(settings: GatewaySettings) -> web.Application:
    if not settings.CONSUL_HTTP_ADDR:
        raise SystemExit("config error: CONSUL_HTTP_ADDR: the gateway discovers upstreams there")
    table = RouteTable.load(settings.GATEWAY_ROUTES_FILE)
    app = create_app(
        settings,
        routes=admin_routes(),
        use_kafka=False,
        faults=False,
        title="mesh gateway",
        description=DESCRIPTION,
    )
    app[GATEWAY_SETTINGS] = settings
    app[ROUTES] = table
    app.cleanup_ctx.append(_gateway_ctx)
    app.router.add_route("*", "/api", proxy_handler)
    app.router.add_route("*", "/api/{tail:.*}", proxy_handler)
    return app
