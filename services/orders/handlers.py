"""Kafka handlers of orders: the saga's outcomes move a PENDING order to its terminal status
and publish ``order.confirmed`` or ``order.cancelled`` with the order's summary."""

from __future__ import annotations

from services.common.kafka.consumer import Handler, HandlerContext, PermanentError, event_data
from services.common.kafka.envelope import Envelope, make_event, utc_now
from services.orders.models import PaymentData, RejectedData, iso
from services.orders.store import OrdersStore

CONFIRMED_TOPIC = "order.confirmed"
CANCELLED_TOPIC = "order.cancelled"


def handlers(store: OrdersStore) -> dict[str, Handler]:
    async def on_rejected(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(RejectedData, event)
        await _conclude(store, event, ctx, "CANCELLED", data.reason)

    async def on_paid(event: Envelope, ctx: HandlerContext) -> None:
        event_data(PaymentData, event)
        await _conclude(store, event, ctx, "CONFIRMED", None)

    async def on_payment_failed(event: Envelope, ctx: HandlerContext) -> None:
        event_data(PaymentData, event)
        await _conclude(store, event, ctx, "CANCELLED", "payment_failed")

    return {
        "inventory.rejected": on_rejected,
        "payment.succeeded": on_paid,
        "payment.failed": on_payment_failed,
    }


async def _conclude(
    store: OrdersStore, event: Envelope, ctx: HandlerContext, status: str, reason: str | None
) -> None:
    order = await store.summary(event.order_id)
    if order is None:
        # The order is stored before its first event exists (outbox): this cannot improve.
        raise PermanentError(f"{event.type} for unknown order {event.order_id}")
    if order.status != "PENDING":
        return  # a late or repeated outcome; the Lua script checks again atomically
    topic = CONFIRMED_TOPIC if status == "CONFIRMED" else CANCELLED_TOPIC
    outcome = make_event(
        topic,
        event.order_id,
        {
            "customer_id": order.customer_id,
            "status": status,
            "reason": reason,
            "items": order.items,
            "total": order.total,
        },
    )
    entry = ctx.outbox.fields(topic, outcome)
    store.transition(ctx.tx, event.order_id, status, reason, iso(utc_now()), entry)
