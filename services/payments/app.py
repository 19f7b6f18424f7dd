"""The payments app: the kit's app with payments' route, handler and store."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.common.app import METRICS, REDIS, create_app
from services.payments.api import PaymentsApi
from services.payments.handlers import Charger, PaymentsMetrics, handlers
from services.payments.settings import PaymentsSettings
from services.payments.store import PaymentsStore

DESCRIPTION = (
    "Charges reserved orders (simulated latency and failure rate), once per order, and "
    "publishes payment.succeeded or payment.failed; a reservation announced again gets the "
    "recorded outcome again, without a second charge."
)


def build(settings: PaymentsSettings) -> web.Application:
    store = PaymentsStore()
    metrics = PaymentsMetrics()
    app = create_app(
        settings,
        routes=PaymentsApi(store).routes(),
        handlers=handlers(store, Charger(settings), metrics),
        description=DESCRIPTION,
    )
    metrics.register(app[METRICS])

    async def attach(app: web.Application) -> AsyncIterator[None]:
        store.attach(app[REDIS])
        yield

    # After the kit's contexts: Redis is open. The kit does not await between starting the
    # consumer task and entering this context, so handlers never run before it.
    app.cleanup_ctx.append(attach)
    return app
