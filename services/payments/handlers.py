"""The Kafka handler of payments: charge a reserved order (simulated), once.

A reservation announced again (``inventory.reserved`` under a new event id: the saga's
re-drive after the broker lost an event) is answered with the recorded outcome, same amount
and reason, under a new event id; the provider is not called again.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from prometheus_client import Counter

from services.common.kafka.consumer import Handler, HandlerContext, event_data
from services.common.kafka.envelope import Envelope, make_event, utc_now
from services.common.metrics import Metrics
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


class PaymentsMetrics:
    """``payments_charges_total{outcome}`` (calls to the provider) and
    ``saga_replays_total{topic}`` (recorded outcomes announced again). Registered once the
    app (and its metrics registry) exists, before any handler runs."""

    def __init__(self) -> None:
        self._metrics: Metrics | None = None
        self._charges: Counter | None = None
        self._replays: Counter | None = None

    def register(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._charges = Counter(
            "payments_charges_total",
            "Charges sent to the payment provider, by outcome (succeeded, failed).",
            ("service", "version", "outcome"),
            registry=metrics.registry,
        )
        self._replays = Counter(
            "saga_replays_total",
            "Recorded outcomes announced again for an order decided before.",
            ("service", "version", "topic"),
            registry=metrics.registry,
        )

    def charged(self, declined: bool) -> None:
        if self._metrics is not None and self._charges is not None:
            self._metrics.child(self._charges, "failed" if declined else "succeeded").inc()

    def replayed(self, topic: str) -> None:
        if self._metrics is not None and self._replays is not None:
            self._metrics.child(self._replays, topic).inc()


def outcome_of(payment: Payment) -> tuple[str, Envelope]:
    """The event that announces ``payment`` (a new event id each time)."""
    topic = SUCCEEDED_TOPIC if payment.status == "SUCCEEDED" else FAILED_TOPIC
    data = {"customer_id": payment.customer_id, "amount": payment.amount, "reason": payment.reason}
    return topic, make_event(topic, payment.order_id, data)


def handlers(
    store: PaymentsStore, charger: Charger, metrics: PaymentsMetrics | None = None
) -> dict[str, Handler]:
    async def on_reserved(event: Envelope, ctx: HandlerContext) -> None:
        data = event_data(ReservedData, event)
        # A redelivered event never gets here (the kit's processed marker). The same order
        # announced again (another event id) finds its payment: a payment is written once
        # and never changes, so reading it outside the transaction is safe; its outcome is
        # announced again with the marker, and the provider is not called.
        recorded = await store.get(event.order_id)
        if recorded is not None:
            topic, outcome = outcome_of(recorded)
            ctx.emit(topic, outcome)
            if metrics is not None:
                metrics.replayed(topic)
            return
        declined = await charger.charge(event.order_id, data.customer_id, data.total)
        if metrics is not None:
            metrics.charged(declined is not None)
        payment = Payment(
            order_id=event.order_id,
            customer_id=data.customer_id,
            amount=data.total,
            status="FAILED" if declined else "SUCCEEDED",
            reason=declined,
            attempted_at=utc_now(),
        )
        topic, outcome = outcome_of(payment)
        # SET NX with the event, in Lua: if another member recorded this order's payment
        # meanwhile (two members around a rebalance), its event is the answer and this one
        # stages nothing.
        store.record(ctx.tx, payment, ctx.outbox.key, ctx.outbox.fields(topic, outcome))

    return {"inventory.reserved": on_reserved}
