"""Kafka handlers of inventory: reserve an order's stock (all lines or none), then commit it
when paid or release it when the payment failed (the saga's compensation)."""

from __future__ import annotations

from services.common.kafka.consumer import Handler, HandlerContext, event_data
from services.common.kafka.envelope import Envelope, make_event
from services.inventory.models import OrderCreatedData
from services.inventory.store import InventoryStore

RESERVED_TOPIC = "inventory.reserved"
REJECTED_TOPIC = "inventory.rejected"


def handlers(store: InventoryStore) -> dict[str, Handler]:
    async def on_order_created(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(OrderCreatedData, event)
        # orders sends one line per SKU; adding up repeats keeps the check right if not.
        quantities: dict[str, int] = {}
        for line in data.items:
            quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
        # The reservation is stored by the script itself, idempotently per order; what goes
        # with the processed marker is the event that announces it (and the "emitted" flag,
        # so an order.created repeated under another event id announces nothing twice).
        reservation = await store.reserve(event.order_id, list(quantities.items()))
        if reservation.emitted:
            return
        if reservation.rejected:
            outcome = make_event(
                REJECTED_TOPIC,
                event.order_id,
                {
                    "customer_id": data.customer_id,
                    "reason": reservation.reason,
                    "skus": reservation.short,
                },
            )
            ctx.emit(REJECTED_TOPIC, outcome)
        else:
            outcome = make_event(
                RESERVED_TOPIC,
                event.order_id,
                {
                    "customer_id": data.customer_id,
                    "items": [line.model_dump() for line in data.items],
                    "total": data.total,
                },
            )
            ctx.emit(RESERVED_TOPIC, outcome)
        store.mark_emitted(ctx.tx, event.order_id)

    async def on_paid(event: Envelope, ctx: HandlerContext) -> None:
        await store.settle(ctx.tx, event.order_id, "commit")

    async def on_payment_failed(event: Envelope, ctx: HandlerContext) -> None:
        await store.settle(ctx.tx, event.order_id, "release")

    return {
        "order.created": on_order_created,
        "payment.succeeded": on_paid,
        "payment.failed": on_payment_failed,
    }
