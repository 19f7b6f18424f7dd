"""The order saga end to end, with the four services as real processes on real Kafka,
Redis and Consul: confirmed, out of stock, payment failure, and a stampede on the last units."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from shop_support import DEADLINE, ShopClient, eventually, unique


async def _stock_settled(client: ShopClient, sku: str) -> dict[str, int]:
    """The stock once no unit is held for an order any more."""
    return await eventually(
        lambda: client.stock(sku),
        timeout=DEADLINE,
        what=f"{sku} settled",
        until=lambda s: not s["reserved"],
    )


async def test_order_is_confirmed_stock_sold_payment_and_notification_recorded(
    client: ShopClient, sku: str
) -> None:
    before = await client.set_stock(sku, 50)
    customer = unique("c")
    placed = await client.place(customer, [{"sku": sku, "quantity": 3}])
    assert placed.status == 202, placed.body
    order = placed.body
    assert order["status"] == "PENDING"
    assert placed.headers["Location"] == f"/orders/{order['id']}"
    assert order["items"] == [{"sku": sku, "quantity": 3, "price": before["price"]}]
    assert order["total"] == 3 * before["price"]

    done = await client.terminal(order["id"])
    assert (done["status"], done["reason"]) == ("CONFIRMED", None)
    assert [step["status"] for step in done["timeline"]] == ["PENDING", "CONFIRMED"]
    assert done["created_at"] <= done["updated_at"]

    stock = await _stock_settled(client, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (
        47,
        0,
        before["sold"] + 3,
    )
    payment = await client.payment(order["id"])
    assert payment.status == 200
    assert (payment.body["status"], payment.body["amount"]) == ("SUCCEEDED", order["total"])
    [notification] = await eventually(
        lambda: client.notifications(order["id"]), timeout=DEADLINE, what="notification"
    )
    assert notification["kind"] == "order.confirmed"
    assert notification["customer_id"] == customer
    assert order["id"] in notification["message"]


async def test_out_of_stock_cancels_and_leaves_stock_unchanged(
    client: ShopClient, sku: str
) -> None:
    before = await client.set_stock(sku, 1)
    placed = await client.place(unique("c"), [{"sku": sku, "quantity": 2}])
    assert placed.status == 202
    done = await client.terminal(placed.body["id"])
    assert (done["status"], done["reason"]) == ("CANCELLED", "out_of_stock")
    assert done["timeline"][-1]["reason"] == "out_of_stock"
    stock = await client.stock(sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (1, 0, before["sold"])
    assert (await client.payment(placed.body["id"])).status == 404  # never charged
    [notification] = await eventually(
        lambda: client.notifications(placed.body["id"]), timeout=DEADLINE, what="notification"
    )
    assert notification["kind"] == "order.cancelled"


async def test_payment_failure_cancels_and_releases_the_stock(client: ShopClient, sku: str) -> None:
    before = await client.set_stock(sku, 10)
    # PAYMENTS_FAIL_CUSTOMER_PREFIX (default "fail-"): payments declines these customers.
    placed = await client.place(unique("fail-c"), [{"sku": sku, "quantity": 4}])
    assert placed.status == 202
    done = await client.terminal(placed.body["id"])
    assert (done["status"], done["reason"]) == ("CANCELLED", "payment_failed")
    stock = await _stock_settled(client, sku)
    assert (stock["available"], stock["sold"]) == (10, before["sold"])  # released
    payment = await client.payment(placed.body["id"])
    assert (payment.body["status"], payment.body["reason"]) == ("FAILED", "forced_failure")


async def test_200_concurrent_orders_for_the_last_5_units(client: ShopClient, sku: str) -> None:
    before = await client.set_stock(sku, 5)
    customer = unique("rush")
    placed = await asyncio.gather(
        *(client.place(customer, [{"sku": sku, "quantity": 1}]) for _ in range(200))
    )
    assert Counter(answer.status for answer in placed) == {202: 200}

    async def all_terminal() -> list[dict[str, Any]]:
        orders = await client.orders_of(customer)
        return orders if all(o["status"] in ("CONFIRMED", "CANCELLED") for o in orders) else []

    orders = await eventually(all_terminal, timeout=2 * DEADLINE, what="200 orders terminal")
    assert len(orders) == 200
    outcomes = Counter((o["status"], o["reason"]) for o in orders)
    assert outcomes == {("CONFIRMED", None): 5, ("CANCELLED", "out_of_stock"): 195}
    confirmed_units = sum(
        line["quantity"] for o in orders if o["status"] == "CONFIRMED" for line in o["items"]
    )
    assert confirmed_units == 5
    stock = await _stock_settled(client, sku)
    assert (stock["available"], stock["reserved"], stock["sold"]) == (0, 0, before["sold"] + 5)
