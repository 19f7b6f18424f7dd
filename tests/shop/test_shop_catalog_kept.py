"""A Redis that comes back without the catalogue (persistence off, or a new instance) gets it
again from inventory by itself: the shop does not refuse every SKU until a restart, and the
stock that survived is kept (the seeding never resets stock)."""

from __future__ import annotations

import redis.asyncio as aioredis
from shop_support import Shop, ShopClient, eventually, unique

CATALOG_KEY = "catalog:skus"


async def test_catalogue_lost_from_redis_is_seeded_again(
    client: ShopClient, shop: Shop, redis_client: aioredis.Redis, sku: str
) -> None:
    placed = await client.place(unique("seed"), [{"sku": sku, "quantity": 2}])
    assert placed.status == 202, placed
    await client.terminal(placed.body["id"])

    # The reservation becomes a sale on the confirmation event, just after the order is
    # terminal: wait for it, or "before" may be read while the units are still reserved.
    async def sold() -> bool:
        return (await client.stock(sku))["reserved"] == 0

    await eventually(sold, timeout=10, what="the reservation committed as sold")
    before = await client.stock(sku)

    assert await redis_client.delete(CATALOG_KEY) == 1
    # Inventory looks for it every INVENTORY_CATALOG_CHECK (2 s) and publishes it again.
    await eventually(
        lambda: redis_client.hlen(CATALOG_KEY), timeout=10, what="the catalogue seeded again"
    )
    after = await client.stock(sku)
    assert (after["available"], after["sold"]) == (before["available"], before["sold"])
    again = await client.place(unique("seed"), [{"sku": sku, "quantity": 1}])
    assert again.status == 202, again
    assert (await client.terminal(again.body["id"]))["status"] == "CONFIRMED"
