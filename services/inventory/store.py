"""Stock in Redis, and the Lua scripts that keep it consistent.

Keys:

* ``catalog:skus`` hash, SKU -> ``{"name", "price"}`` JSON: the catalogue, published here for
  the other services (orders validates and prices orders with it);
* ``inventory:stock:<sku>`` hash: ``available``, ``reserved``, ``sold``;
* ``inventory:reservation:<order id>`` hash: ``state`` (``reserved``, ``rejected``,
  ``committed``, ``released``), ``lines`` (JSON ``[[sku, quantity], ...]``), ``reason`` and
  ``short`` (comma-separated SKUs) when rejected, and ``order`` (the ``order.created`` data it
  was decided on, JSON) and ``trace`` (the trace context it was decided in): everything needed
  to announce the outcome again. It makes every step idempotent per order, whatever the event
  ids;
* ``inventory:held`` sorted set: the orders whose stock is held (state ``reserved``), scored by
  when the reservation is due to be announced again (unix seconds; README "Re-drive"). Added
  by the script that reserves, removed by the one that settles.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from services.common.kafka import redrive
from services.common.tracing import current_carrier
from services.inventory.models import Product, StockItem

CATALOG_KEY = "catalog:skus"

# Reserve every line of an order or none, once per order. A second call returns the outcome
# recorded by the first (and "1" last), so a redelivered or re-announced order.created never
# reserves twice and gets the same answer. Held stock enters the re-drive index.
# KEYS: reservation, held index, stock of each line. ARGV: quantity of each line, SKU of each
# line, lines, the order.created data (JSON), due time, order id, trace context (JSON).
_RESERVE = """
local recorded = redis.call('HMGET', KEYS[1], 'state', 'reason', 'short', 'order')
if recorded[1] then
  return {recorded[1], recorded[2] or '', recorded[3] or '', recorded[4] or '', '1'}
end
local n = #KEYS - 2
local short, reason = {}, 'out_of_stock'
for i = 1, n do
  local available = redis.call('HGET', KEYS[i + 2], 'available')
  if not available then
    reason = 'unknown_sku'
    table.insert(short, ARGV[n + i])
  elseif tonumber(available) < tonumber(ARGV[i]) then
    table.insert(short, ARGV[n + i])
  end
end
if #short > 0 then
  local skus = table.concat(short, ',')
  redis.call('HSET', KEYS[1], 'state', 'rejected', 'reason', reason, 'short', skus,
    'order', ARGV[2 * n + 2], 'trace', ARGV[2 * n + 5])
  return {'rejected', reason, skus, ARGV[2 * n + 2], '0'}
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 2], 'available', -tonumber(ARGV[i]))
  redis.call('HINCRBY', KEYS[i + 2], 'reserved', tonumber(ARGV[i]))
end
redis.call('HSET', KEYS[1], 'state', 'reserved', 'lines', ARGV[2 * n + 1],
  'order', ARGV[2 * n + 2], 'trace', ARGV[2 * n + 5])
redis.call('ZADD', KEYS[2], ARGV[2 * n + 3], ARGV[2 * n + 4])
return {'reserved', '', '', ARGV[2 * n + 2], '0'}
"""

# Commit (paid: reserved -> sold) or release (payment failed: reserved -> available) a
# reservation, once: only a reservation still in state "reserved" moves, and it leaves the
# re-drive index.
# KEYS: reservation, held index, stock of each line. ARGV: "commit" or "release", order id,
# quantity of each line.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'reserved' then
  return 0
end
local target = ARGV[1] == 'commit' and 'sold' or 'available'
for i = 3, #KEYS do
  local quantity = tonumber(ARGV[i])
  redis.call('HINCRBY', KEYS[i], 'reserved', -quantity)
  redis.call('HINCRBY', KEYS[i], target, quantity)
end
redis.call('HSET', KEYS[1], 'state', ARGV[1] == 'commit' and 'committed' or 'released')
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS: stock. ARGV: available. Only a seeded SKU can be set.
_SET_AVAILABLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'available', ARGV[1])
return 1
"""


def stock_key(sku: str) -> str:
    return f"inventory:stock:{sku}"


def reservation_key(order_id: str) -> str:
    return f"inventory:reservation:{order_id}"


HELD_KEY = "inventory:held"


@dataclass(frozen=True)
class Reservation:
    state: str  # reserved, rejected, committed or released
    reason: str
    short: list[str]
    # The order.created data the outcome was decided on; None for a reservation recorded
    # before it was kept.
    order: dict[str, Any] | None
    # True when the order was seen before: this is the recorded outcome, nothing was reserved.
    replayed: bool

    @property
    def rejected(self) -> bool:
        return self.state == "rejected"


@dataclass(frozen=True)
class Held:
    """A reservation that may still hold stock, as its re-announcement needs it."""

    order_id: str
    state: str
    order: dict[str, Any] | None
    trace: dict[str, str]


class InventoryStore:
    """Stock reads and writes; the Redis client comes with :meth:`attach` at start-up.
    ``redrive_after``: how long held stock waits for its payment's outcome before the
    reservation is first announced again."""

    def __init__(self, redrive_after: float = 10.0) -> None:
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._redrive_after = redrive_after

    def attach(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._scripts = {
            "reserve": redis.register_script(_RESERVE),
            "set_available": redis.register_script(_SET_AVAILABLE),
        }

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the inventory store is not attached to Redis yet")
        return self._redis

    async def seed(self, products: Sequence[Product], initial_stock: int) -> None:
        """Publish the catalogue and create missing stock; existing stock is never reset.

        One transaction per start-up: whoever sees a SKU in the catalogue also finds its
        stock.
        """
        async with self.redis.pipeline(transaction=True) as tx:
            for product in products:
                entry = json.dumps({"name": product.name, "price": product.price})
                tx.hset(CATALOG_KEY, product.sku, entry)
                key = stock_key(product.sku)
                tx.hsetnx(key, "available", initial_stock)
                tx.hsetnx(key, "reserved", 0)
                tx.hsetnx(key, "sold", 0)
            await tx.execute()

    async def has_catalog(self) -> bool:
        return bool(await self.redis.exists(CATALOG_KEY))

    async def item(self, sku: str) -> StockItem | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(CATALOG_KEY, sku)
            pipe.hgetall(stock_key(sku))
            entry, stock = await pipe.execute()
        return _item(sku, entry, stock) if entry and stock else None

    async def items(self) -> list[StockItem]:
        catalog = cast(dict[str, str], await self.redis.hgetall(CATALOG_KEY))
        skus = sorted(catalog)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sku in skus:
                pipe.hgetall(stock_key(sku))
            stocks: list[dict[str, str]] = await pipe.execute()
        return [
            _item(sku, catalog[sku], stock)
            for sku, stock in zip(skus, stocks, strict=True)
            if stock
        ]

    async def set_available(self, sku: str, available: int) -> bool:
        return bool(await self._scripts["set_available"](keys=[stock_key(sku)], args=[available]))

    async def reserve(
        self, order_id: str, lines: Sequence[tuple[str, int]], order: Mapping[str, Any]
    ) -> Reservation:
        """Reserve all ``lines`` (distinct SKUs) or none, recording ``order`` (the
        ``order.created`` data) with the outcome; the recorded outcome if the order was seen
        before.

        Not on the handler's transaction: the outcome event depends on what the script finds.
        Safe because it is idempotent per order: if the transaction that emits the outcome
        fails, the retry (or the redelivery) gets the recorded outcome back and emits it.
        """
        skus = [sku for sku, _ in lines]
        quantities = [quantity for _, quantity in lines]
        due = time.time() + self._redrive_after
        state, reason, short, recorded, replayed = await self._scripts["reserve"](
            keys=[reservation_key(order_id), HELD_KEY, *(stock_key(sku) for sku in skus)],
            args=[
                *quantities,
                *skus,
                json.dumps(lines),
                json.dumps(order),
                due,
                order_id,
                json.dumps(current_carrier()),
            ],
        )
        return Reservation(
            state,
            reason,
            short.split(",") if short else [],
            json.loads(recorded) if recorded else None,
            replayed == "1",
        )

    async def settle(self, tx: Pipeline, order_id: str, mode: str) -> bool:
        """Queue the commit or release of an order's reservation on ``tx``; False if the
        order has no reservation to settle."""
        key = reservation_key(order_id)
        raw = cast(str | None, await self.redis.hget(key, "lines"))
        if raw is None:
            return False  # rejected, or never seen: nothing is held
        lines: list[tuple[str, int]] = json.loads(raw)
        # EVAL, not EVALSHA: inside MULTI a NOSCRIPT error (script cache flushed by a
        # restart) would fail this command alone while the processed marker is still set.
        keys = [key, HELD_KEY, *(stock_key(sku) for sku, _ in lines)]
        quantities = [quantity for _, quantity in lines]
        tx.eval(_SETTLE, len(keys), *keys, mode, order_id, *quantities)
        return True

    # --- the re-drive ------------------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[str]:
        """Orders whose held stock is due for a re-announcement, the most overdue first."""
        return await redrive.due(self.redis, HELD_KEY, now, limit)

    async def held(self, order_ids: Sequence[str]) -> list[Held]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in order_ids:
                pipe.hmget(reservation_key(order_id), ["state", "order", "trace"])
            rows: list[list[str | None]] = await pipe.execute()
        return [
            Held(
                order_id,
                state or "",
                json.loads(order) if order else None,
                json.loads(trace) if trace else {},
            )
            for order_id, (state, order, trace) in zip(order_ids, rows, strict=True)
        ]

    async def redrive(
        self,
        outbox_key: str,
        entries: Sequence[tuple[str, Mapping[str, str] | None]],
        *,
        now: float,
        after: float,
        cap: float,
    ) -> int:
        """Re-announce each ``(order id, outbox entry)`` whose stock is still held and push
        its next re-announcement back; a settled reservation only leaves the index. One
        transaction; returns how many were announced again."""
        if not entries:
            return 0
        async with self.redis.pipeline(transaction=True) as tx:
            for order_id, entry in entries:
                waiting = redrive.Waiting(reservation_key(order_id), "state", "reserved", order_id)
                redrive.stage_redrive(
                    tx, HELD_KEY, waiting, outbox_key, entry, now=now, after=after, cap=cap
                )
            results: list[int] = await tx.execute()
        return sum(1 for result in results if result == 1)


def _item(sku: str, entry: str, stock: dict[str, str]) -> StockItem:
    product = json.loads(entry)
    return StockItem(
        sku=sku,
        name=product["name"],
        price=product["price"],
        available=int(stock.get("available", 0)),
        reserved=int(stock.get("reserved", 0)),
        sold=int(stock.get("sold", 0)),
    )
