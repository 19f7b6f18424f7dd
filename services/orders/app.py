"""The orders app: the kit's app with orders' routes, handlers, store and saga re-drive."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.common.app import LIFECYCLE, METRICS, OUTBOX, REDIS, create_app
from services.orders.api import OrdersApi
from services.orders.catalogue import Catalogue
from services.orders.handlers import handlers
from services.orders.redrive import redrive_loop
from services.orders.settings import OrdersSettings
from services.orders.store import OrdersStore

DESCRIPTION = (
    "Accepts orders (202, PENDING), publishes order.created through the outbox, and records "
    "the saga's outcome (CONFIRMED or CANCELLED with a reason) with a status timeline. "
    "Orders whose saga goes quiet are announced again (re-drive) until they conclude."
)


def build(settings: OrdersSettings) -> web.Application:
    store = OrdersStore(redrive_after=settings.SAGA_REDRIVE_AFTER)
    api = OrdersApi(settings, store, Catalogue(settings.ORDERS_CATALOG_TTL))
    app = create_app(
        settings, routes=api.routes(), handlers=handlers(store), description=DESCRIPTION
    )

    async def attach(app: web.Application) -> AsyncIterator[None]:
        store.attach(app[REDIS], app[OUTBOX])
        redriver = redrive_loop(settings, store, app[REDIS], app[METRICS])
        # Stopped as soon as draining starts, with the consumers: what its last sweep staged
        # is still flushed by the outbox relay, which stops later.
        app[LIFECYCLE].drain_hooks.append(redriver.stop)
        redriver.start()
        yield
        await redriver.stop()

    # After the kit's contexts: Redis is open. The kit does not await between starting the
    # consumer task and entering this context, so handlers never run before it.
    app.cleanup_ctx.append(attach)
    return app
