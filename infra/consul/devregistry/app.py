"""The aiohttp application factory of the development registry."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from .api import CHECKS, KV_MAX_VALUE_BYTES, REGISTRY, error_middleware, routes
from .checks import DEFAULT_REAP_INTERVAL, CheckManager
from .state import NodeInfo, Registry


def default_node(address: str = "127.0.0.1", name: str | None = None) -> NodeInfo:
    """This machine as a Consul node; like ``consul agent -dev``, named after the host."""
    node_name = name or socket.gethostname() or "devregistry"
    # Stable across restarts, so the node keeps its ID like a real agent's data dir would.
    node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"devregistry.{node_name}"))
    return NodeInfo(name=node_name, node_id=node_id, address=address)


async def _run_checks(app: web.Application) -> AsyncIterator[None]:
    checks = app[CHECKS]
    await checks.start()
    yield
    await checks.close()


async def _release_blocked_queries(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers, so long polls end at once.
    app[REGISTRY].close()


def make_app(
    *, node: NodeInfo | None = None, reap_interval: float = DEFAULT_REAP_INTERVAL
) -> web.Application:
    # Room for a KV value at Consul's limit plus headers; bigger bodies get a 413.
    app = web.Application(middlewares=[error_middleware], client_max_size=2 * KV_MAX_VALUE_BYTES)
    registry = Registry(node or default_node())
    app[REGISTRY] = registry
    app[CHECKS] = CheckManager(registry, reap_interval=reap_interval)
    app.cleanup_ctx.append(_run_checks)
    app.on_shutdown.append(_release_blocked_queries)
    app.add_routes(routes)
    return app
