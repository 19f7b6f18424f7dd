"""The Kafka handler of payments: charge a reserved order (simulated), once."""

from __future__ import annotations

import asyncio
import hashlib
import random

from services.common.kafka.consumer import Handler, HandlerContext, event_data
from services.common.kafka.envelope import Envelope, make_event, utc_now
from services.payments.models import Payment, ReservedData
from services.payments.settings import PaymentsSettings
from services.payments.store import PaymentsStore

SUCCEEDED_TOPIC = "payment.succeeded"
FAILED_TOPIC = "payment.failed"


class Charger:
    """The simulated payment provider. Like a real one given the order id as idempotency
    key, it answers the same for the same order: charging an order again (the same order
    announced under another event id) charges nothing twice and gives the same outcome."""

    def __init__(self, settings: PaymentsSettings) -> None:
        self._latency = settings.PAYMENTS_LATENCY_MS / 1000
        self._jitter = settings.PAYMENTS_JITTER_MS / 1000
        self._failure_rate = settings.PAYMENTS_FAILURE_RATE
        self._fail_prefix = settings.PAYMENTS_FAIL_CUSTOMER_PREFIX

    async def charge(self, order_id: str, customer_id: str, amount: int) -> str | None:
        """Take the time a provider would; the reason of a decline, None when paid."""
        delay = self._latency + random.uniform(-self._jitter, self._jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        if self._fail_prefix and customer_id.startswith(self._fail_prefix):
            return "forced_failure"
        if _uniform(order_id) < self._failure_rate:
            return "card_declined"
        return None


def _uniform(order_id: str) -> float:
    """A number in [0, 1) fixed by the order id: random across orders, stable per order."""
    digest = hashlib.blake2b(order_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def handlers(store: PaymentsStore, charger: Charger) -> dict[str, Handler]:
    async def on_reserved(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(ReservedData, event)
        # A redelivered event never gets here (the kit's processed marker); the same order
        # under another event id is charged idempotently and recorded once (SET NX).
        declined = await charger.charge(event.order_id, data.customer_id, data.total)
        payment = Payment(
            order_id=event.order_id,
            customer_id=data.customer_id,
            amount=data.total,
            status="FAILED" if declined else "SUCCEEDED",
            reason=declined,
            attempted_at=utc_now(),
        )
        topic = FAILED_TOPIC if declined else SUCCEEDED_TOPIC
        outcome = make_event(
            topic,
            event.order_id,
            {"customer_id": data.customer_id, "amount": data.total, "reason": declined},
        )
        store.record(ctx.tx, payment, ctx.outbox.key, ctx.outbox.fields(topic, outcome))

    return {"inventory.reserved": on_reserved}
