"""The restock policy: every interval, one replica brings each SKU that fell below a level back
up to it, and announces each restock as ``inventory.restocked``.

Without it the seeded stock (``INVENTORY_INITIAL_STOCK``) only goes down: after some ten
thousand orders every order is CANCELLED ``out_of_stock``, and a long demo or drill looks like
an outage. ``INVENTORY_RESTOCK="1000 every 30s"`` turns it on (the local runtime and the compose
stack do); ``PUT /stock/{sku}`` still sets a SKU's stock by hand.

A restock is one Lua script per SKU that sets ``available`` only if it still holds what the
sweep read (a reservation in between makes it try again), and adds the event to the outbox
in the same step: the stock never changes without its event, so the history of a SKU's stock
(reservations, releases, restocks) stays whole. The event's ``order_id`` (its Kafka key) is
the SKU: the restocks of one SKU stay in order on one partition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from services.common.kafka.envelope import make_event
from services.common.kafka.outbox import Outbox
from services.common.metrics import Metrics
from services.common.tracing import tracer
from services.common.turns import TurnLoop
from services.inventory.settings import RestockPolicy
from services.inventory.store import stock_key

log = logging.getLogger(__name__)

RESTOCKED_TOPIC = "inventory.restocked"
LOCK_KEY = "inventory:restock:lock"
# A SKU whose stock moved between the read and the script is read again, at most this often
# in one sweep; what is left waits for the next interval.
ATTEMPTS = 3

# KEYS: stock, outbox. ARGV: the available units the sweep read, the level, then the outbox
# entry's field/value pairs. 1 if restocked, 0 if the stock moved meanwhile.
_RESTOCK = """
if redis.call('HGET', KEYS[1], 'available') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'available', ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return 1
"""


class Restocker:
    """One sweep: :meth:`sweep` restocks every SKU below the level; returns the units added."""

    def __init__(
        self,
        redis: aioredis.Redis,
        outbox: Outbox,
        metrics: Metrics,
        policy: RestockPolicy,
        skus: Sequence[str],
    ) -> None:
        self._redis = redis
        self._outbox = outbox
        self._metrics = metrics
        self._policy = policy
        self._skus = list(skus)
        self._script = redis.register_script(_RESTOCK)
        self._units = Counter(
            "inventory_restocked_units_total",
            "Units added by the restock policy (INVENTORY_RESTOCK).",
            ("service", "version"),
            registry=metrics.registry,
        )

    async def sweep(self) -> int:
        added: dict[str, int] = {}
        wanted = self._skus
        for _ in range(ATTEMPTS):
            below = await self._below(wanted)
            if not below:
                break
            # A trace of its own: the restock, its scripts and the relay's sends.
            with tracer().start_as_current_span(
                "restock", kind=SpanKind.INTERNAL, attributes={"mesh.restock.skus": len(below)}
            ):
                moved = [sku for sku, available in below if not await self._restock(sku, available)]
            added.update((sku, self._policy.level - a) for sku, a in below if sku not in moved)
            wanted = moved
        units = sum(added.values())
        if units:
            self._metrics.child(self._units).inc(units)
            log.info(
                "restocked %d SKU(s) up to %d: %d units",
                len(added),
                self._policy.level,
                units,
                extra={"restocked": added},
            )
        return units

    async def _below(self, skus: Sequence[str]) -> list[tuple[str, int]]:
        """The SKUs (seeded ones only) with fewer units available than the level."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for sku in skus:
                pipe.hget(stock_key(sku), "available")
            values: list[str | None] = await pipe.execute()
        return [
            (sku, int(value))
            for sku, value in zip(skus, values, strict=True)
            if value is not None and int(value) < self._policy.level
        ]

    async def _restock(self, sku: str, available: int) -> bool:
        level = self._policy.level
        event = make_event(
            RESTOCKED_TOPIC,
            sku,
            {"sku": sku, "added": level - available, "available": level},
        )
        pairs = [
            item for pair in self._outbox.fields(RESTOCKED_TOPIC, event).items() for item in pair
        ]
        done = await self._script(
            keys=[stock_key(sku), self._outbox.key], args=[available, level, *pairs]
        )
        return bool(done)


def restock_loop(
    redis: aioredis.Redis,
    outbox: Outbox,
    metrics: Metrics,
    policy: RestockPolicy,
    skus: Sequence[str],
    owner: str,
) -> TurnLoop:
    restocker = Restocker(redis, outbox, metrics, policy, skus)

    async def turn() -> None:
        await restocker.sweep()

    return TurnLoop(
        redis, turn, lock_key=LOCK_KEY, owner=owner, interval=policy.every, name="restock"
    )
