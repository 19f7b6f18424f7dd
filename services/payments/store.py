"""Payments in Redis: ``payments:payment:<order id>``, a JSON string per order.

A payment is recorded at most once per order, together with the event announcing it (Lua on
the handler's transaction): however often an order is announced, one payment, one event.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.payments.models import Payment

# KEYS: payment, outbox. ARGV: the payment JSON, then the outbox entry's field/value pairs.
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
  return 1
end
return 0
"""


def payment_key(order_id: str) -> str:
    return f"payments:payment:{order_id}"


class PaymentsStore:
    """The Redis client comes with :meth:`attach` at start-up."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None

    def attach(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the payments store is not attached to Redis yet")
        return self._redis

    async def get(self, order_id: str) -> Payment | None:
        raw = await self.redis.get(payment_key(order_id))
        return Payment.model_validate_json(raw) if raw else None

    def record(
        self, tx: Pipeline, payment: Payment, outbox_key: str, outbox_entry: Mapping[str, str]
    ) -> None:
        """Queue on ``tx``: store the payment and its event, unless the order has one.

        EVAL, not EVALSHA: inside MULTI a NOSCRIPT error (script cache flushed by a restart)
        would fail this command alone while the processed marker is still set.
        """
        pairs = [item for pair in outbox_entry.items() for item in pair]
        key = payment_key(payment.order_id)
        tx.eval(_RECORD, 2, key, outbox_key, payment.model_dump_json(), *pairs)
