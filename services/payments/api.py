"""The HTTP API of payments: the payment of an order."""

from __future__ import annotations

from aiohttp import web

from services.common.errors import ApiError
from services.common.openapi import Route
from services.payments.models import Payment
from services.payments.store import PaymentsStore


class PaymentsApi:
    def __init__(self, store: PaymentsStore) -> None:
        self._store = store

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/payments/{order_id}",
                self.get,
                "The payment of an order",
                response=Payment,
            )
        ]

    async def get(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        payment = await self._store.get(order_id)
        if payment is None:
            raise ApiError(404, "not_found", f"no payment for order {order_id}")
        return web.Response(text=payment.model_dump_json(), content_type="application/json")
