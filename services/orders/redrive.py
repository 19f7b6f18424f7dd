"""The saga re-drive of orders: PENDING orders whose saga went quiet are announced again.

A broker that loses events it had acknowledged (tansu with memory storage, when it restarts)
would leave such an order PENDING forever; the outbox cannot help, the broker said yes. Every
``SAGA_REDRIVE_INTERVAL`` one replica (the kit's :class:`RedriveLoop`) reads the orders due
in ``orders:pending`` and announces each one again: ``order.created``, same data, a NEW event
id (the consumers' processed markers would skip the old one), through the outbox (kept while
the broker is away). Each stage answers by replaying the outcome it recorded, so the order
moves on from wherever its saga stopped, and nothing is reserved or charged twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind

from services.common.kafka.envelope import make_event
from services.common.kafka.redrive import RedriveLoop
from services.common.metrics import Metrics
from services.common.tracing import context_from_carrier, tracer
from services.orders.settings import OrdersSettings
from services.orders.store import ORDER_CREATED, Announcement, OrdersStore

LOCK_KEY = "orders:redrive:lock"


class OrdersRedrive:
    """One sweep: :meth:`sweep` re-announces the orders due now (at most a batch)."""

    def __init__(self, settings: OrdersSettings, store: OrdersStore) -> None:
        self._store = store
        self._after = settings.SAGA_REDRIVE_AFTER
        self._cap = max(settings.SAGA_REDRIVE_MAX, settings.SAGA_REDRIVE_AFTER)
        self._batch = settings.SAGA_REDRIVE_BATCH

    async def sweep(self) -> int:
        now = time.time()
        due = await self._store.due(now, self._batch)
        if not due:
            return 0
        entries = [
            # Nothing to announce for an order concluded meanwhile (it leaves the index), nor
            # for one whose data is missing (it is tried again later).
            (
                found.order_id,
                self._entry(found) if found.status == "PENDING" and found.data else None,
            )
            for found in await self._store.announcements(due)
        ]
        return await self._store.redrive(entries, now=now, after=self._after, cap=self._cap)

    def _entry(self, found: Announcement) -> Mapping[str, str]:
        event = make_event(ORDER_CREATED, found.order_id, found.data)
        # A child of the request that created the order: the re-driven saga shows up in the
        # order's own trace (the outbox entry carries this context to the relay's send span).
        with tracer().start_as_current_span(
            "redrive order.created",
            context=context_from_carrier(found.trace),
            kind=SpanKind.INTERNAL,
            attributes={"mesh.order_id": found.order_id, "messaging.message.id": str(event.id)},
        ):
            return self._store.outbox.fields(ORDER_CREATED, event)


def redrive_loop(
    settings: OrdersSettings, store: OrdersStore, redis: aioredis.Redis, metrics: Metrics
) -> RedriveLoop:
    return RedriveLoop(
        redis,
        metrics,
        OrdersRedrive(settings, store).sweep,
        lock_key=LOCK_KEY,
        owner=settings.instance_id,
        interval=settings.SAGA_REDRIVE_INTERVAL,
        what="PENDING order(s)",
    )
