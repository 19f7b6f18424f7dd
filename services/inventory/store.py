"""Stock in Redis, and the Lua scripts that keep it consistent.

Keys:

* ``catalog:skus`` hash, SKU -> ``{"name", "price"}`` JSON: the catalogue, published here for
  the other services (orders validates and prices orders with it);
* ``inventory:stock:<sku>`` hash: ``available``, ``reserved``, ``sold``;
* ``inventory:reservation:<order id>`` hash: ``state`` (``reserved``, ``rejected``,
  ``committed``, ``released``), ``lines`` (JSON ``[[sku, quantity], ...]``), ``reason`` and
  ``short`` (comma-separated SKUs) when rejected, ``emitted`` (``1`` once the outcome event
  was staged). It makes every step idempotent per order, whatever the event ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from services.inventory.models import Product, StockItem

CATALOG_KEY = "catalog:skus"

# Reserve every line of an order or none, once per order. A second call returns the outcome
# recorded by the first, so a redelivered order.created never reserves twice.
# KEYS: reservation, stock of each line. ARGV: quantity of each line, SKU of each line, lines.
_RESERVE = """
local recorded = redis.call('HMGET', KEYS[1], 'state', 'reason', 'short', 'emitted')
if recorded[1] then
  return {recorded[1], recorded[2] or '', recorded[3] or '', recorded[4] or '0'}
end
local n = #KEYS - 1
local short, reason = {}, 'out_of_stock'
for i = 1, n do
  local available = redis.call('HGET', KEYS[i + 1], 'available')
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
    'emitted', '0')
  return {'rejected', reason, skus, '0'}
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 1], 'available', -tonumber(ARGV[i]))
  redis.call('HINCRBY', KEYS[i + 1], 'reserved', tonumber(ARGV[i]))
end
redis.call('HSET', KEYS[1], 'state', 'reserved', 'lines', ARGV[2 * n + 1], 'emitted', '0')
return {'reserved', '', '', '0'}
"""

# Commit (paid: reserved -> sold) or release (payment failed: reserved -> available) a
# reservation, once: only a reservation still in state "reserved" moves.
# KEYS: reservation, stock of each line. ARGV: "commit" or "release", quantity of each line.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'reserved' then
  return 0
end
local target = ARGV[1] == 'commit' and 'sold' or 'available'
for i = 2, #KEYS do
  local quantity = tonumber(ARGV[i])
  redis.call('HINCRBY', KEYS[i], 'reserved', -quantity)
  redis.call('HINCRBY', KEYS[i], target, quantity)
end
redis.call('HSET', KEYS[1], 'state', ARGV[1] == 'commit' and 'committed' or 'released')
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


@dataclass(frozen=True)
class Reservation:
    state: str  # reserved, rejected, committed or released
    reason: str
    short: list[str]
    emitted: bool

    @property
    def rejected(self) -> bool:
        return self.state == "rejected"


class InventoryStore:
    """Stock reads and writes; the Redis client comes with :meth:`attach` at start-up."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

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

    async def reserve(self, order_id: str, lines: Sequence[tuple[str, int]]) -> Reservation:
        """Reserve all ``lines`` (distinct SKUs) or none; the recorded outcome if the order
        was seen before."""
        skus = [sku for sku, _ in lines]
        quantities = [quantity for _, quantity in lines]
        state, reason, short, emitted = await self._scripts["reserve"](
            keys=[reservation_key(order_id), *(stock_key(sku) for sku in skus)],
            args=[*quantities, *skus, json.dumps(lines)],
        )
        return Reservation(state, reason, short.split(",") if short else [], emitted == "1")

    def mark_emitted(self, tx: Pipeline, order_id: str) -> None:
        tx.hset(reservation_key(order_id), "emitted", "1")

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
        keys = [key, *(stock_key(sku) for sku, _ in lines)]
        tx.eval(_SETTLE, len(keys), *keys, mode, *(quantity for _, quantity in lines))
        return True


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
