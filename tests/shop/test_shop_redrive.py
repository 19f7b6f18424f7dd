"""The saga re-drive: an order whose event the broker lost is announced again and concludes,
stock held for an answer that was lost is announced again and settles; every stage answers a
re-announcement by replaying its recorded outcome, without reserving or charging twice."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from shop_support import DEADLINE, Shop, ShopClient, eventually, publish, records_of, unique

from services.common.kafka.envelope import make_event, utc_now
from services.common.kafka.outbox import Outbox
from services.inventory.store import HELD_KEY, InventoryStore
from services.orders.models import Line, Order, TimelineEntry, new_order_id
from services.orders.store import ORDER_CREATED, PENDING_KEY, OrdersStore

# How long a lost step waits for its first re-announcement (the session's services sweep
# every 500 ms: shop_env).
LOST_AFTER = 1.0


async def _stored_order(
    redis_client: aioredis.Redis, sku: str, quantity: int, price: int, *, redrive_after: float
) -> tuple[Order, dict[str, Any], Outbox]:
    """An order stored exactly as POST /orders stores it, except that its order.created goes
    to an outbox no relay reads: as if the broker had acknowledged the event and lost it."""
    nowhere = Outbox(unique("lost-in-the-broker"))
    store = OrdersStore(redrive_after=redrive_after)
    store.attach(redis_client, nowhere)
    now = utc_now()
    line = Line(sku=sku, quantity=quantity, price=price)
    order = Order(
        id=new_order_id(),
        customer_id=unique("c"),
        status="PENDING",
        items=[line],
        total=quantity * price,
        created_at=now,
        updated_at=now,
        timeline=[TimelineEntry(status="PENDING", at=now)],
    )
    data = {"customer_id": order.customer_id, "items": [line.model_dump()], "total": order.total}
    assert await store.create(order, make_event(ORDER_CREATED, order.id, data), None) is None
    return order, data, nowhere


async def test_an_order_whose_order_created_was_lost_is_announced_again_and_confirmed(
    client: ShopClient, shop: Shop, sku: str, redis_client: aioredis.Redis
) -> None:
    before = await client.set_stock(sku, 10)
    redrives = shop.services["orders"].metric("saga_redrives_total")
    order, data, nowhere = await _stored_order(
        redis_client, sku, 3, before["price"], redrive_after=LOST_AFTER
    )
    try:
        [lost] = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(nowhere.key))
        assert await redis_client.zscore(PENDING_KEY, order.id) is not None
        done = await client.terminal(order.id)
    finally:
        await redis_client.delete(nowhere.key)

    assert (done["status"], done["reason"]) == ("CONFIRMED", None)
    assert [step["status"] for step in done["timeline"]] == ["PENDING", "CONFIRMED"]
    # One announcement reached the broker: the re-announcement, same data, a new event id.
    [record] = await records_of(shop.bootstrap, ORDER_CREATED, order.id)
    announced = json.loads(record.value)
    assert announced["id"] != lost[1]["id"]
    assert announced["data"] == data
    assert shop.services["orders"].metric("saga_redrives_total") >= redrives + 1
    # Concluded orders leave the index in the same step.
    assert await redis_client.zscore(PENDING_KEY, order.id) is None
    stock = await eventually(
        lambda: client.stock(sku), timeout=DEADLINE, what="sold", until=lambda s: not s["reserved"]
    )
    assert (stock["available"], stock["sold"]) == (7, before["sold"] + 3)
    payment = await client.payment(order.id)
    assert (payment.body["status"], payment.body["amount"]) == ("SUCCEEDED", order.total)


async def test_stock_held_for_a_lost_answer_is_announced_again_and_settles(
    client: ShopClient, shop: Shop, sku: str, redis_client: aioredis.Redis
) -> None:
    before = await client.set_stock(sku, 10)
    redrives = shop.services["inventory"].metric("saga_redrives_total")
    # orders will not re-drive this one for an hour: inventory must.
    order, data, nowhere = await _stored_order(
        redis_client, sku, 2, before["price"], redrive_after=3600
    )
    try:
        # Reserved as inventory's handler reserves, and then what followed was lost (its
        # inventory.reserved, or the payment's outcome on its way back): the units are held.
        inventory = InventoryStore(redrive_after=LOST_AFTER)
        inventory.attach(redis_client)
        reservation = await inventory.reserve(order.id, [(sku, 2)], data)
        assert (reservation.state, reservation.replayed) == ("reserved", False)
        assert (await client.stock(sku))["reserved"] == 2
        assert await redis_client.zscore(HELD_KEY, order.id) is not None

        # inventory announces the reservation again; payments charges, orders confirms, and
        # the payment's outcome settles the stock.
        stock = await eventually(
            lambda: client.stock(sku),
            timeout=DEADLINE,
            what="the held units sold",
            until=lambda s: not s["reserved"] and s["sold"] == before["sold"] + 2,
        )
    finally:
        await redis_client.delete(nowhere.key)
    assert stock["available"] == 8
    assert (await client.terminal(order.id))["status"] == "CONFIRMED"
    [record] = await records_of(shop.bootstrap, "inventory.reserved", order.id)
    assert json.loads(record.value)["data"] == data
    assert (await client.payment(order.id)).body["amount"] == order.total
    assert shop.services["inventory"].metric("saga_redrives_total") >= redrives + 1
    # Settled reservations and concluded orders leave their indexes.
    assert await redis_client.zscore(HELD_KEY, order.id) is None
    assert await redis_client.zscore(PENDING_KEY, order.id) is None


async def test_redrive_backs_off_per_order_and_stops_once_the_order_concluded(
    redis_client: aioredis.Redis,
) -> None:
    order, data, nowhere = await _stored_order(redis_client, "SKU-001", 1, 100, redrive_after=3600)
    store = OrdersStore()
    store.attach(redis_client, nowhere)
    # A clock far ahead: the service's own sweeps never find this order due.
    later = time.time() + 10**6
    try:
        [found] = await store.announcements([order.id])
        assert (found.status, found.data) == ("PENDING", data)
        waits = []
        for _ in range(5):
            entry = nowhere.fields(ORDER_CREATED, make_event(ORDER_CREATED, order.id, data))
            count = await store.redrive([(order.id, entry)], now=later, after=10, cap=60)
            assert count == 1
            score = await redis_client.zscore(PENDING_KEY, order.id)
            assert score is not None
            waits.append(score - later)
        # SAGA_REDRIVE_AFTER after the first re-announcement, doubling, capped. (Lua turns the
        # score into a string with 14 significant digits: a millisecond or so of rounding.)
        assert waits == pytest.approx([10, 20, 40, 60, 60], abs=0.01)
        entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(nowhere.key))
        announced = [json.loads(fields["value"]) for _, fields in entries]
        assert len(announced) == 1 + 5  # the original, then each re-announcement
        assert len({event["id"] for event in announced}) == 6
        assert all(event["data"] == data for event in announced)

        # Concluded meanwhile (between the sweep's read and its transaction): not announced,
        # out of the index.
        await redis_client.hset(f"orders:order:{order.id}", "status", "CANCELLED")
        entry = nowhere.fields(ORDER_CREATED, make_event(ORDER_CREATED, order.id, data))
        assert await store.redrive([(order.id, entry)], now=later, after=10, cap=60) == 0
        assert await redis_client.zscore(PENDING_KEY, order.id) is None
        assert await redis_client.xlen(nowhere.key) == 6
    finally:
        await redis_client.zrem(PENDING_KEY, order.id)
        await redis_client.delete(
            nowhere.key, f"orders:order:{order.id}", f"orders:customer:{order.customer_id}"
        )


# --- replays ------------------------------------------------------------------------------------

# What each stage published for an order, by topic.
OUTCOMES = ("inventory.reserved", "inventory.rejected", "payment.succeeded", "payment.failed")


async def _published(shop: Shop, order_id: str) -> dict[str, list[dict[str, Any]]]:
    found = await asyncio.gather(*(records_of(shop.bootstrap, t, order_id) for t in OUTCOMES))
    return {
        topic: [json.loads(record.value) for record in records]
        for topic, records in zip(OUTCOMES, found, strict=True)
    }


def _counts(published: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {topic: len(events) for topic, events in published.items() if events}


def _counted_as(counts: dict[str, int], published: dict[str, list[dict[str, Any]]]) -> bool:
    return _counts(published) == counts


async def test_stages_replay_recorded_outcomes_without_reserving_or_charging_twice(
    client: ShopClient, shop: Shop, sku: str
) -> None:
    await client.set_stock(sku, 10)
    placed = await asyncio.gather(
        client.place(unique("c"), [{"sku": sku, "quantity": 2}]),  # confirmed
        client.place(unique("c"), [{"sku": sku, "quantity": 100}]),  # out of stock
        client.place(unique("fail-c"), [{"sku": sku, "quantity": 1}]),  # payment declined
    )
    ids = [answer.body["id"] for answer in placed]
    orders = [await client.terminal(order_id) for order_id in ids]
    assert [(o["status"], o["reason"]) for o in orders] == [
        ("CONFIRMED", None),
        ("CANCELLED", "out_of_stock"),
        ("CANCELLED", "payment_failed"),
    ]
    stock = await eventually(
        lambda: client.stock(sku),
        timeout=DEADLINE,
        what="settled",
        until=lambda s: not s["reserved"] and s["available"] == 8,
    )
    payments = [(await client.payment(order_id)).body for order_id in ids]
    for order_id in ids:
        await eventually(
            functools.partial(client.notifications, order_id), timeout=DEADLINE, what="notified"
        )
    first = {order_id: await _published(shop, order_id) for order_id in ids}
    assert [_counts(first[order_id]) for order_id in ids] == [
        {"inventory.reserved": 1, "payment.succeeded": 1},
        {"inventory.rejected": 1},
        {"inventory.reserved": 1, "payment.failed": 1},
    ]
    charges = shop.services["payments"].metric("payments_charges_total")
    replays = {
        name: shop.services[name].metric("saga_replays_total") for name in ("inventory", "payments")
    }

    # Each order announced again, as the orders service's re-drive does it: the same data
    # under a new event id.
    for order_id in ids:
        [record] = await records_of(shop.bootstrap, ORDER_CREATED, order_id)
        again = {**json.loads(record.value), "id": str(uuid.uuid4())}
        await publish(shop.bootstrap, ORDER_CREATED, json.dumps(again).encode(), key=record.key)

    # Every stage answers with what it answered the first time, under a new event id.
    expected = [
        {"inventory.reserved": 2, "payment.succeeded": 2},
        {"inventory.rejected": 2},
        {"inventory.reserved": 2, "payment.failed": 2},
    ]
    for order_id, counts in zip(ids, expected, strict=True):
        await eventually(
            functools.partial(_published, shop, order_id),
            timeout=DEADLINE,
            what=f"replays for {order_id}",
            until=functools.partial(_counted_as, counts),
        )
    # A sentinel order through the whole saga: anything more the repeats were to cause would
    # have been published by the time it is done.
    sentinel = await client.place(unique("c"), [{"sku": sku, "quantity": 1}])
    assert (await client.terminal(sentinel.body["id"]))["status"] == "CONFIRMED"
    await eventually(
        lambda: client.notifications(sentinel.body["id"]), timeout=DEADLINE, what="sentinel"
    )

    for order_id, counts in zip(ids, expected, strict=True):
        published = await _published(shop, order_id)
        assert _counts(published) == counts
        for topic, events in published.items():
            if events:
                original, replay = events
                assert replay["data"] == original["data"], topic
                assert replay["id"] != original["id"], topic
    # Nothing reserved, charged, moved or notified twice.
    after = await client.stock(sku)
    assert (after["available"], after["reserved"], after["sold"]) == (
        stock["available"] - 1,
        0,
        stock["sold"] + 1,
    )  # only the sentinel's unit moved
    assert [(await client.payment(order_id)).body for order_id in ids] == payments
    assert shop.services["payments"].metric("payments_charges_total") == charges + 1  # sentinel
    assert [await client.order(order_id) for order_id in ids] == orders
    for order_id in ids:
        assert len(await client.notifications(order_id)) == 1
    assert shop.services["inventory"].metric("saga_replays_total") == replays["inventory"] + 3
    assert shop.services["payments"].metric("saga_replays_total") == replays["payments"] + 2
