"""Kafka handlers of inventory: reserve an order's stock (all lines or none), then commit it
when paid or release it when the payment failed (the saga's compensation).

An order announced again (``order.created`` under a new event id: the orders service's saga
re-drive, after the broker lost an event) gets the recorded outcome announced again: same
items and total, or same reason and SKUs, under a new event id; nothing is reserved twice.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from services.common.kafka.consumer import Handler, HandlerContext, event_data
from services.common.kafka.envelope import Envelope, make_event
from services.common.metrics import Metrics
from services.inventory.models import OrderCreatedData
from services.inventory.store import InventoryStore

RESERVED_TOPIC = "inventory.reserved"
REJECTED_TOPIC = "inventory.rejected"


class Replays:
    """``saga_replays_total{topic}``: outcomes announced for an order decided before (a
    re-announcement, or the retry of an attempt whose transaction failed). Registered once
    the app (and its metrics registry) exists, before any handler runs."""

    def __init__(self) -> None:
        self._metrics: Metrics | None = None
        self._counter: Counter | None = None

    def register(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counter = Counter(
            "saga_replays_total",
            "Recorded outcomes announced again for an order decided before.",
            ("service", "version", "topic"),
            registry=metrics.registry,
        )

    def count(self, topic: str) -> None:
        if self._metrics is not None and self._counter is not None:
            self._metrics.child(self._counter, topic).inc()


def reserved_data(order: OrderCreatedData) -> dict[str, Any]:
    """What ``inventory.reserved`` says, from the order it was decided on."""
    return {
        "customer_id": order.customer_id,
        "items": [line.model_dump() for line in order.items],
        "total": order.total,
    }


def handlers(store: InventoryStore, replays: Replays | None = None) -> dict[str, Handler]:
    async def on_order_created(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(OrderCreatedData, event)
        # orders sends one line per SKU; adding up repeats keeps the check right if not.
        quantities: dict[str, int] = {}
        for line in data.items:
            quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
        # The script reserves once per order and records the outcome; every order.created
        # not seen before (by event id: the kit's marker) announces that outcome, the first
        # and any re-announcement alike. The announcement goes with the marker.
        reservation = await store.reserve(
            event.order_id, list(quantities.items()), data.model_dump(mode="json")
        )
        # What the first answer was built from, so a replay says exactly the same.
        decided = data
        if reservation.order is not None:
            decided = OrderCreatedData.model_validate(reservation.order)
        if reservation.rejected:
            topic = REJECTED_TOPIC
            outcome = make_event(
                topic,
                event.order_id,
                {
                    "customer_id": decided.customer_id,
                    "reason": reservation.reason,
                    "skus": reservation.short,
                },
            )
        else:
            # Also once committed or released: the order's saga may have lost what followed
            # (payments answers a repeated reservation with its recorded outcome).
            topic = RESERVED_TOPIC
            outcome = make_event(topic, event.order_id, reserved_data(decided))
        ctx.emit(topic, outcome)
        if reservation.replayed and replays is not None:
            replays.count(topic)

    async def on_paid(event: Envelope, ctx: HandlerContext) -> None:
        await store.settle(ctx.tx, event.order_id, "commit")

    async def on_payment_failed(event: Envelope, ctx: HandlerContext) -> None:
        await store.settle(ctx.tx, event.order_id, "release")

    return {
        "order.created": on_order_created,
        "payment.succeeded": on_paid,
        "payment.failed": on_payment_failed,
    }
