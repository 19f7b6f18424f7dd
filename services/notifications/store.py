"""Notifications in Redis.

Keys:

* ``notifications:order:<order id>`` the notification of an order (JSON), written once;
* ``notifications:customer:<customer id>`` sorted set of order ids by creation time (ms);
* ``notifications:feed`` a stream (capped) of every notification as it is recorded: what
  ``/notifications/stream`` follows on every instance, and what a reconnecting client
  resumes from (``Last-Event-ID`` is a stream id).
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.notifications.models import Notification

FEED_KEY = "notifications:feed"

# One notification per order, whatever the number of terminal events: the first one wins.
# KEYS: order's notification, customer's index, feed. ARGV: JSON, score, order id, maxlen.
_RECORD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'notification', ARGV[1])
  return 1
end
return 0
"""


def order_key(order_id: str) -> str:
    return f"notifications:order:{order_id}"


def customer_key(customer_id: str) -> str:
    return f"notifications:customer:{customer_id}"


class NotificationsStore:
    """The Redis client comes with :meth:`attach` at start-up."""

    def __init__(self, feed_maxlen: int) -> None:
        self._feed_maxlen = feed_maxlen
        self._redis: aioredis.Redis | None = None

    def attach(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the notifications store is not attached to Redis yet")
        return self._redis

    def record(self, tx: Pipeline, notification: Notification) -> None:
        """Queue on ``tx``: store the notification unless the order has one already.

        EVAL, not EVALSHA: inside MULTI a NOSCRIPT error (script cache flushed by a restart)
        would fail this command alone while the processed marker is still set.
        """
        tx.eval(
            _RECORD,
            3,
            order_key(notification.order_id),
            customer_key(notification.customer_id),
            FEED_KEY,
            notification.model_dump_json(),
            int(notification.created_at.timestamp() * 1000),
            notification.order_id,
            self._feed_maxlen,
        )

    async def of_order(self, order_id: str) -> list[Notification]:
        raw = await self.redis.get(order_key(order_id))
        return [Notification.model_validate_json(raw)] if raw else []

    async def of_customer(self, customer_id: str, limit: int) -> list[Notification]:
        """Newest first."""
        order_ids = cast(
            list[str], await self.redis.zrevrange(customer_key(customer_id), 0, limit - 1)
        )
        if not order_ids:
            return []
        raws = cast(list[str | None], await self.redis.mget([order_key(o) for o in order_ids]))
        return [Notification.model_validate_json(raw) for raw in raws if raw]

    async def latest(self, limit: int) -> list[Notification]:
        """The newest notifications of every customer (from the feed), newest first."""
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.redis.xrevrange(FEED_KEY, "+", "-", count=limit),
        )
        return [
            Notification.model_validate_json(fields["notification"])
            for _, fields in entries
            if "notification" in fields
        ]
