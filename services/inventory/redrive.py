"""The saga re-drive of inventory: stock held for an order whose payment's outcome never came.

Inventory holds stock from ``order.created`` until ``payment.succeeded`` (commit) or
``payment.failed`` (release). If the broker loses that outcome before inventory read it (tansu
with memory storage, when it restarts), the order may still conclude in orders (which consumes
the same topics in its own group) and is then never re-driven there: the units would stay
reserved forever. So inventory re-drives what it waits for, like orders does: every
``SAGA_REDRIVE_INTERVAL`` one replica (the kit's :class:`RedriveLoop`) announces the
reservations held too long again: ``inventory.reserved``, same data, a NEW event id, through
the outbox. payments answers with the payment's recorded outcome (without charging again),
and inventory settles; orders ignores an outcome for a concluded order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from services.common.kafka.envelope import make_event
from services.common.kafka.outbox import Outbox
from services.common.kafka.redrive import RedriveLoop
from services.common.metrics import Metrics
from services.common.tracing import context_from_carrier, tracer
from services.inventory.handlers import RESERVED_TOPIC, reserved_data
from services.inventory.models import OrderCreatedData
from services.inventory.settings import InventorySettings
from services.inventory.store import Held, InventoryStore

log = logging.getLogger(__name__)

LOCK_KEY = "inventory:redrive:lock"


class InventoryRedrive:
    """One sweep: :meth:`sweep` re-announces the held reservations due now (at most a
    batch)."""

    def __init__(self, settings: InventorySettings, store: InventoryStore, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox
        self._after = settings.SAGA_REDRIVE_AFTER
        self._cap = max(settings.SAGA_REDRIVE_MAX, settings.SAGA_REDRIVE_AFTER)
        self._batch = settings.SAGA_REDRIVE_BATCH

    async def sweep(self) -> int:
        now = time.time()
        due = await self._store.due(now, self._batch)
        if not due:
            return 0
        entries = [(held.order_id, self._entry(held)) for held in await self._store.held(due)]
        return await self._store.redrive(
            self._outbox.key, entries, now=now, after=self._after, cap=self._cap
        )

    def _entry(self, held: Held) -> Mapping[str, str] | None:
        if held.state != "reserved":
            return None  # settled meanwhile: it only leaves the index
        try:
            data = reserved_data(OrderCreatedData.model_validate(held.order))
        except ValidationError:
            log.warning("cannot announce the reservation of %s again: no order data", held.order_id)
            return None
        event = make_event(RESERVED_TOPIC, held.order_id, data)
        # A child of the span that reserved: the re-drive shows up in the order's trace.
        with tracer().start_as_current_span(
            f"redrive {RESERVED_TOPIC}",
            context=context_from_carrier(held.trace),
            kind=SpanKind.INTERNAL,
            attributes={"mesh.order_id": held.order_id, "messaging.message.id": str(event.id)},
        ):
            return self._outbox.fields(RESERVED_TOPIC, event)


def redrive_loop(
    settings: InventorySettings,
    store: InventoryStore,
    outbox: Outbox,
    redis: aioredis.Redis,
    metrics: Metrics,
) -> RedriveLoop:
    return RedriveLoop(
        redis,
        metrics,
        InventoryRedrive(settings, store, outbox).sweep,
        lock_key=LOCK_KEY,
        owner=settings.instance_id,
        interval=settings.SAGA_REDRIVE_INTERVAL,
        what="held reservation(s)",
    )
