"""Poison messages go to ``<topic>.dlq`` (at once when they can never be handled, after
CONSUMER_MAX_ATTEMPTS when the handler keeps failing) and the consumers keep going."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from shop_support import DEADLINE, Shop, ShopClient, eventually, publish, records_of, unique

from services.common.kafka.envelope import make_event

MAX_ATTEMPTS = 3  # CONSUMER_MAX_ATTEMPTS of the test session


async def _dead(shop: Shop, topic: str, key: str, count: int) -> list[dict[str, Any]]:
    records = await records_of(shop.bootstrap, f"{topic}.dlq", key)
    return [json.loads(r.value) for r in records] if len(records) >= count else []


async def test_poison_messages_reach_the_dlq_and_orders_keep_flowing(
    client: ShopClient, shop: Shop, sku: str, redis_client: aioredis.Redis
) -> None:
    poison_key = unique("poison")
    not_json = b"{this is not an envelope"
    bad_data = make_event("order.created", poison_key, {"customer_id": "c", "items": "nope"})
    await publish(shop.bootstrap, "order.created", not_json, key=poison_key.encode())
    await publish(
        shop.bootstrap, "order.created", bad_data.to_json().encode(), key=poison_key.encode()
    )

    # An outcome for an order whose record is corrupt: the handler fails every time.
    broken_order = unique("broken")
    await redis_client.set(f"orders:order:{broken_order}", "not a hash")
    rejected = make_event("inventory.rejected", broken_order, {"reason": "out_of_stock"})
    try:
        await publish(
            shop.bootstrap,
            "inventory.rejected",
            rejected.to_json().encode(),
            key=broken_order.encode(),
        )
        dead = await eventually(
            lambda: _dead(shop, "order.created", poison_key, 2), timeout=DEADLINE, what="dlq"
        )
        [garbage] = [d for d in dead if d["original"] == not_json.decode()]
        [invalid] = [d for d in dead if isinstance(d["original"], dict)]
        assert (garbage["attempts"], garbage["error"]["type"]) == (1, "PermanentError")
        assert (invalid["attempts"], invalid["error"]["type"]) == (1, "PermanentError")
        assert "invalid order.created data" in invalid["error"]["message"]
        assert invalid["original"]["id"] == str(bad_data.id)
        assert (invalid["topic"], invalid["group"]) == ("order.created", "inventory")

        [failing] = await eventually(
            lambda: _dead(shop, "inventory.rejected", broken_order, 1), timeout=DEADLINE, what="dlq"
        )
        assert failing["attempts"] == MAX_ATTEMPTS
        assert failing["error"]["type"] == "ResponseError"  # WRONGTYPE, every attempt
        assert (failing["original"]["id"], failing["group"]) == (str(rejected.id), "orders")
    finally:
        await redis_client.delete(f"orders:order:{broken_order}")

    # The consumers moved on: a valid order goes all the way.
    await client.set_stock(sku, 5)
    placed = await client.place(unique("c"), [{"sku": sku, "quantity": 1}])
    assert (await client.terminal(placed.body["id"]))["status"] == "CONFIRMED"
