"""The Kafka handler of notifications: one notification per terminal order."""

from __future__ import annotations

import uuid

from services.common.kafka.consumer import Handler, HandlerContext, event_data
from services.common.kafka.envelope import Envelope, utc_now
from services.notifications.models import Kind, Notification, TerminalData
from services.notifications.store import NotificationsStore

CONFIRMED: Kind = "order.confirmed"
CANCELLED: Kind = "order.cancelled"


def message(kind: Kind, order_id: str, data: TerminalData) -> str:
    if kind == CONFIRMED:
        count = len(data.items)
        return (
            f"Your order {order_id} is confirmed: {count} line{'s' if count != 1 else ''}, "
            f"total {data.total / 100:.2f}."
        )
    return f"Your order {order_id} was cancelled ({data.reason or 'no reason given'})."


def handlers(store: NotificationsStore) -> dict[str, Handler]:
    async def on_terminal(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(TerminalData, event)
        kind = CONFIRMED if ctx.topic == CONFIRMED else CANCELLED
        notification = Notification(
            id=uuid.uuid4().hex,
            order_id=event.order_id,
            customer_id=data.customer_id,
            kind=kind,
            message=message(kind, event.order_id, data),
            created_at=utc_now(),
        )
        store.record(ctx.tx, notification)

    return {CONFIRMED: on_terminal, CANCELLED: on_terminal}
