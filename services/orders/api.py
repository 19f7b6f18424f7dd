"""The HTTP API of orders: place an order, read one, list a customer's orders."""

from __future__ import annotations

import hashlib
import re

from aiohttp import web
from pydantic import BaseModel

from services.common.errors import ApiError
from services.common.kafka.envelope import make_event, utc_now
from services.common.openapi import RETRY_AFTER, Answer, Header, Route
from services.common.validation import read_json, read_query
from services.orders.catalogue import Catalogue
from services.orders.models import (
    Line,
    Order,
    OrderIn,
    OrderPage,
    OrderQuery,
    TimelineEntry,
    new_order_id,
)
from services.orders.settings import OrdersSettings
from services.orders.store import ORDER_CREATED, Claim, OrdersStore, idempotency_key

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_PATTERN = r"^[\x21-\x7e]{1,200}$"
_IDEMPOTENCY_VALUE = re.compile(_IDEMPOTENCY_PATTERN)
IDEMPOTENCY_KEY = Header(
    IDEMPOTENCY_HEADER,
    "Makes a retry safe: the same key with the same body (per customer, for "
    "ORDERS_IDEMPOTENCY_TTL) answers the order the first request placed instead of a new one",
    schema={"type": "string", "pattern": _IDEMPOTENCY_PATTERN},
)
LOCATION = Header(
    "Location",
    "Where the order can be read",
    required=True,
    schema={"type": "string", "pattern": "/orders/[0-9a-f-]{36}$"},
)
REPLAYED = Header(
    "Idempotent-Replayed",
    "true when the answer is the replay of an earlier request with the same Idempotency-Key",
    schema={"type": "string", "enum": ["true"]},
)


def _json(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=model.model_dump_json(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class OrdersApi:
    def __init__(self, settings: OrdersSettings, store: OrdersStore, catalogue: Catalogue) -> None:
        self._settings = settings
        self._store = store
        self._catalogue = catalogue

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/orders",
                self.create,
                "Place an order (answers 202: the saga decides CONFIRMED or CANCELLED)",
                body=OrderIn,
                response=Order,
                status=202,
                headers=(LOCATION, REPLAYED),
                request_headers=(IDEMPOTENCY_KEY,),
                errors={
                    404: "The order an Idempotency-Key was first used for is gone",
                    422: "Body does not validate, a SKU the catalogue does not have, a bad "
                    "Idempotency-Key, or one reused with another body",
                    503: Answer(
                        "The catalogue is not available yet, or Redis is unreachable",
                        (RETRY_AFTER,),
                    ),
                },
                tags=("orders",),
                links={
                    "GetOrder": {
                        "operationId": "get_orders_id",
                        "parameters": {"id": "$response.body#/id"},
                        "description": "The order, as the saga moves it on",
                    },
                    "CustomerOrders": {
                        "operationId": "get_orders",
                        "parameters": {"customer_id": "$response.body#/customer_id"},
                        "description": "Every order of the customer",
                    },
                },
            ),
            Route("GET", "/orders/{id}", self.get, "One order", response=Order, tags=("orders",)),
            Route(
                "GET",
                "/orders",
                self.list,
                "A customer's orders, newest first, a page at a time (next_cursor)",
                query=OrderQuery,
                response=OrderPage,
                tags=("orders",),
            ),
        ]

    async def create(self, request: web.Request) -> web.Response:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _IDEMPOTENCY_VALUE.match(key):
            raise ApiError(
                422,
                "validation_error",
                f"header {IDEMPOTENCY_HEADER}: 1 to 200 visible ASCII characters expected",
                details=[{"field": IDEMPOTENCY_HEADER, "message": "invalid", "type": "header"}],
            )
        body = await read_json(request, OrderIn)
        claim = None
        if key is not None:
            fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
            claim = Claim(
                idempotency_key(body.customer_id, key),
                fingerprint,
                int(self._settings.ORDERS_IDEMPOTENCY_TTL),
            )
            claimed = await self._store.claimed(claim)
            if claimed is not None:
                return await self._replay(claim, claimed.order_id, claimed.fingerprint)

        order = await self._new_order(body)
        event = make_event(
            ORDER_CREATED,
            order.id,
            {
                "customer_id": order.customer_id,
                "items": [line.model_dump() for line in order.items],
                "total": order.total,
            },
        )
        claimed = await self._store.create(order, event, claim)
        if claim is not None and claimed is not None:
            # A concurrent request with the same key won the race.
            return await self._replay(claim, claimed.order_id, claimed.fingerprint)
        return _json(order, 202, {"Location": f"/orders/{order.id}"})

    async def _new_order(self, body: OrderIn) -> Order:
        products = await self._catalogue.lookup(
            self._store.redis, (line.sku for line in body.items)
        )
        if self._catalogue.empty:
            raise ApiError(
                503,
                "unavailable",
                "the catalogue is not available yet (is inventory running?)",
                headers={"Retry-After": "5"},
            )
        unknown = [
            {"field": f"items.{n}.sku", "message": f"unknown sku {line.sku}", "type": "unknown_sku"}
            for n, line in enumerate(body.items)
            if line.sku not in products
        ]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            first = unknown[0]
            raise ApiError(
                422,
                "validation_error",
                f"body field {first['field']}: {first['message']}{more}",
                details=unknown,
            )
        lines = [
            Line(sku=line.sku, quantity=line.quantity, price=products[line.sku].price)
            for line in body.items
        ]
        now = utc_now()
        return Order(
            id=new_order_id(),
            customer_id=body.customer_id,
            status="PENDING",
            items=lines,
            total=sum(line.price * line.quantity for line in lines),
            created_at=now,
            updated_at=now,
            timeline=[TimelineEntry(status="PENDING", at=now)],
        )

    async def _replay(self, claim: Claim, order_id: str, fingerprint: str) -> web.Response:
        if fingerprint != claim.fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"{IDEMPOTENCY_HEADER} was already used with a different body; "
                "use a new key for a new order",
                details=[
                    {
                        "field": IDEMPOTENCY_HEADER,
                        "message": "already used with a different body",
                        "type": "idempotency_key_reused",
                    }
                ],
            )
        order = await self._store.get(order_id)
        if order is None:  # the order was removed from Redis by hand: nothing to replay
            raise ApiError(404, "not_found", f"the order of this {IDEMPOTENCY_HEADER} is gone")
        headers = {"Location": f"/orders/{order.id}", "Idempotent-Replayed": "true"}
        return _json(order, 202, headers)

    async def get(self, request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        order = await self._store.get(order_id)
        if order is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        return _json(order)

    async def list(self, request: web.Request) -> web.Response:
        query = read_query(request, OrderQuery)
        orders, next_cursor = await self._store.page(query.customer_id, query.limit, query.cursor)
        return _json(OrderPage(orders=orders, next_cursor=next_cursor))
