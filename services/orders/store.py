"""Orders in Redis: one hash per order, a per-customer index, idempotency keys, and the
atomic status transition (Lua) that also emits the terminal event through the outbox.

Keys:

* ``orders:order:<id>`` hash: ``customer_id``, ``status``, ``reason``, ``items`` (JSON),
  ``total``, ``created_at``, ``updated_at``, ``timeline`` (JSON);
* ``orders:customer:<customer_id>`` sorted set of order ids, all with score 0: ids are
  UUIDv7, so the lexicographic order is the creation order and a page is one ``ZRANGE BYLEX``;
* ``orders:idempotency:<customer_id>:<key>`` string ``"<order id> <body sha256>"``, expiring;
* ``orders:pending`` sorted set: every PENDING order, scored by when it is due to be announced
  again (unix seconds; README "Re-drive"). Added in the transaction that creates the order,
  removed by the script that concludes it, bumped by the script that re-announces it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from services.common.kafka import redrive
from services.common.kafka.envelope import Envelope
from services.common.kafka.outbox import Outbox
from services.common.redis import GroupCommit
from services.common.tracing import current_carrier
from services.orders.models import Order, TimelineEntry, iso

ORDER_CREATED = "order.created"
PENDING_KEY = "orders:pending"

# Moves a PENDING order to a terminal status and emits the event, or does nothing: a late or
# duplicate outcome never moves an order that is already CONFIRMED or CANCELLED. A concluded
# order leaves the re-drive index in the same step.
# KEYS: order, outbox, pending index. ARGV: status, reason, at, order id, then the outbox
# entry's field/value pairs.
_TRANSITION = """
if redis.call('HGET', KEYS[1], 'status') ~= 'PENDING' then
  return 0
end
redis.call('ZREM', KEYS[3], ARGV[4])
local timeline = cjson.decode(redis.call('HGET', KEYS[1], 'timeline'))
local entry = {status = ARGV[1], at = ARGV[3]}
if ARGV[2] ~= '' then entry.reason = ARGV[2] end
table.insert(timeline, entry)
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'reason', ARGV[2], 'updated_at', ARGV[3],
  'timeline', cjson.encode(timeline))
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))
return 1
"""


def order_key(order_id: str) -> str:
    return f"orders:order:{order_id}"


def customer_key(customer_id: str) -> str:
    return f"orders:customer:{customer_id}"


def idempotency_key(customer_id: str, key: str) -> str:
    return f"orders:idempotency:{customer_id}:{key}"


@dataclass(frozen=True)
class Summary:
    """What the terminal events say about an order (read without building the whole order:
    this runs for every outcome event)."""

    status: str
    customer_id: str
    items: list[dict[str, Any]]
    total: int


@dataclass(frozen=True)
class Announcement:
    """What a re-announcement of ``order.created`` is built from: the order as it was created
    (its items and total never change) and the trace context of the request that created it."""

    order_id: str
    status: str
    data: dict[str, Any]
    trace: dict[str, str]


@dataclass(frozen=True)
class Claim:
    """An ``Idempotency-Key`` and the fingerprint of the body it was sent with."""

    key: str
    fingerprint: str
    ttl: int


@dataclass(frozen=True)
class Claimed:
    """What an ``Idempotency-Key`` already points to."""

    order_id: str
    fingerprint: str


class OrdersStore:
    """Reads and writes orders; the Redis client and outbox come with :meth:`attach` at
    start-up (the kit opens them). ``redrive_after``: how long a new order waits before its
    first re-announcement."""

    def __init__(self, redrive_after: float = 10.0) -> None:
        self._redis: aioredis.Redis | None = None
        self._outbox: Outbox | None = None
        self._commits: GroupCommit | None = None
        self._redrive_after = redrive_after

    def attach(self, redis: aioredis.Redis, outbox: Outbox) -> None:
        self._redis = redis
        self._outbox = outbox
        self._commits = GroupCommit(redis)

    @property
    def commits(self) -> GroupCommit:
        if self._commits is None:
            raise RuntimeError("the orders store is not attached to Redis yet")
        return self._commits

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the orders store is not attached to Redis yet")
        return self._redis

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("the orders store is not attached to the outbox yet")
        return self._outbox

    async def claimed(self, claim: Claim) -> Claimed | None:
        return _claimed(cast(str | None, await self.redis.get(claim.key)))

    async def create(self, order: Order, event: Envelope, claim: Claim | None) -> Claimed | None:
        """Store a new order and stage ``order.created`` in one transaction.

        With a ``claim``, the idempotency key is set in the same transaction, watched so two
        concurrent requests with one key create one order; returns what the key points to if
        it was already taken (nothing is written then).
        """
        async with self.redis.pipeline(transaction=True) as tx:
            while True:
                try:
                    if claim is not None:
                        await tx.watch(claim.key)
                        taken = _claimed(cast(str | None, await tx.get(claim.key)))
                        if taken is not None:
                            return taken
                        tx.multi()
                    self._stage_create(tx, order, event)
                    if claim is not None:
                        value = f"{order.id} {claim.fingerprint}"
                        tx.set(claim.key, value, ex=claim.ttl)
                        await tx.execute()
                    else:
                        # Nothing watched: orders placed together are stored together.
                        await self.commits.execute(tx)
                    return None
                except WatchError:
                    continue  # the key was just taken: the next round reads it

    def _stage_create(self, tx: Pipeline, order: Order, event: Envelope) -> None:
        stored = {**_to_hash(order), "trace": json.dumps(current_carrier())}
        tx.hset(order_key(order.id), mapping=stored)
        tx.zadd(customer_key(order.customer_id), {order.id: 0})
        # Due for a re-announcement unless concluded by then (same transaction: no PENDING
        # order escapes the index). Wall-clock time, shared by the replicas: a skew between
        # their clocks only shifts when it is due.
        tx.zadd(PENDING_KEY, {order.id: time.time() + self._redrive_after})
        self.outbox.stage(tx, ORDER_CREATED, event)

    async def get(self, order_id: str) -> Order | None:
        stored = cast(dict[str, str], await self.redis.hgetall(order_key(order_id)))
        return _from_hash(order_id, stored) if stored else None

    async def summary(self, order_id: str) -> Summary | None:
        status, customer_id, items, total = cast(
            list[str | None],
            await self.redis.hmget(
                order_key(order_id), ["status", "customer_id", "items", "total"]
            ),
        )
        if status is None or customer_id is None or items is None or total is None:
            return None
        return Summary(status, customer_id, json.loads(items), int(total))

    async def page(
        self, customer_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """Newest first; ``cursor`` is the last id of the previous page."""
        start = f"({cursor}" if cursor else "+"
        ids: list[str] = await self.redis.zrange(  # type: ignore[assignment]
            customer_key(customer_id), start, "-", desc=True, bylex=True, offset=0, num=limit + 1
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in ids[:limit]:
                pipe.hgetall(order_key(order_id))
            hashes: list[dict[str, str]] = await pipe.execute()
        orders = [
            _from_hash(order_id, stored)
            for order_id, stored in zip(ids[:limit], hashes, strict=True)
            if stored
        ]
        next_cursor = ids[limit - 1] if len(ids) > limit else None
        return orders, next_cursor

    def transition(
        self,
        tx: Pipeline,
        order_id: str,
        status: str,
        reason: str | None,
        at: str,
        outbox_entry: Mapping[str, str],
    ) -> None:
        """Queue the PENDING -> ``status`` move (and its event) on the handler's transaction.

        EVAL, not EVALSHA: inside MULTI a NOSCRIPT error (script cache flushed by a restart)
        would fail this command alone while the processed marker is still set.
        """
        pairs = [item for pair in outbox_entry.items() for item in pair]
        keys = (order_key(order_id), self.outbox.key, PENDING_KEY)
        tx.eval(_TRANSITION, len(keys), *keys, status, reason or "", at, order_id, *pairs)

    # --- the re-drive ------------------------------------------------------------------------

    async def due(self, now: float, limit: int) -> list[str]:
        """Ids of PENDING orders due for a re-announcement, the most overdue first."""
        return await redrive.due(self.redis, PENDING_KEY, now, limit)

    async def announcements(self, order_ids: Sequence[str]) -> list[Announcement]:
        """What each order's re-announcement is made of (an order gone from Redis comes back
        with an empty status: the re-drive only drops it from the index)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in order_ids:
                pipe.hmget(
                    order_key(order_id), ["status", "customer_id", "items", "total", "trace"]
                )
            rows: list[list[str | None]] = await pipe.execute()
        found = []
        for order_id, (status, customer_id, items, total, trace) in zip(
            order_ids, rows, strict=True
        ):
            if status is None or customer_id is None or items is None or total is None:
                found.append(Announcement(order_id, status or "", {}, {}))
                continue
            data = {"customer_id": customer_id, "items": json.loads(items), "total": int(total)}
            found.append(Announcement(order_id, status, data, json.loads(trace or "{}")))
        return found

    async def redrive(
        self,
        entries: Sequence[tuple[str, Mapping[str, str] | None]],
        *,
        now: float,
        after: float,
        cap: float,
    ) -> int:
        """Re-announce each ``(order id, outbox entry)`` still PENDING and push its next
        re-announcement back; an order no longer PENDING only leaves the index (an entry of
        ``None``: nothing to announce). One transaction; returns how many orders were
        announced again."""
        if not entries:
            return 0
        async with self.redis.pipeline(transaction=True) as tx:
            for order_id, entry in entries:
                waiting = redrive.Waiting(order_key(order_id), "status", "PENDING", order_id)
                redrive.stage_redrive(
                    tx, PENDING_KEY, waiting, self.outbox.key, entry, now=now, after=after, cap=cap
                )
            results: list[int] = await tx.execute()
        return sum(1 for result in results if result == 1)


def _claimed(value: str | None) -> Claimed | None:
    if value is None:
        return None
    order_id, _, fingerprint = value.partition(" ")
    return Claimed(order_id, fingerprint)


def _to_hash(order: Order) -> Mapping[Any, str | int]:
    return {
        "customer_id": order.customer_id,
        "status": order.status,
        "reason": order.reason or "",
        "items": json.dumps([line.model_dump() for line in order.items]),
        "total": order.total,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "timeline": json.dumps([_timeline_entry(entry) for entry in order.timeline]),
    }


def _timeline_entry(entry: TimelineEntry) -> dict[str, str]:
    out = {"status": entry.status, "at": iso(entry.at)}
    if entry.reason:
        out["reason"] = entry.reason
    return out


def _from_hash(order_id: str, stored: Mapping[str, str]) -> Order:
    return Order.model_validate(
        {
            **stored,
            "id": order_id,
            "reason": stored.get("reason") or None,
            "items": json.loads(stored["items"]),
            "timeline": json.loads(stored["timeline"]),
        }
    )
