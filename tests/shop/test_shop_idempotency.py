"""At-least-once delivery made harmless: the same event twice changes nothing; the same order
announced again under new event ids changes nothing either, each stage only announces its
recorded outcome again (the saga's replay); the same Idempotency-Key gives the same order."""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

from shop_support import DEADLINE, Shop, ShopClient, eventually, publish, records_of, unique

SAGA = ("order.created", "inventory.reserved", "payment.succeeded", "order.confirmed")
# Records of each topic for the order once we published the original, the same message and a
# new id: inventory answers the new-id order.created with a replay of inventory.reserved, and
# payments answers both new-id reservations (ours and that replay) with payment.succeeded.
EXPECTED = {
    "order.created": 3,
    "inventory.reserved": 3 + 1,
    "payment.succeeded": 3 + 2,
    "order.confirmed": 3,
}
# Who consumes each of them (consumer group = service).
CONSUMERS = {
    "order.created": ("inventory",),
    "inventory.reserved": ("payments",),
    "payment.succeeded": ("orders", "inventory"),
    "order.confirmed": ("notifications",),
}


def _consumed(shop: Shop, outcome: str) -> dict[tuple[str, str], float]:
    return {
        (service, topic): shop.services[service].metric(
            "kafka_messages_consumed_total", topic=topic, outcome=outcome
        )
        for topic, services in CONSUMERS.items()
        for service in services
    }


async def test_redelivered_events_change_nothing(client: ShopClient, shop: Shop, sku: str) -> None:
    before = await client.set_stock(sku, 10)
    placed = await client.place(unique("c"), [{"sku": sku, "quantity": 2}])
    order_id = placed.body["id"]
    assert (await client.terminal(order_id))["status"] == "CONFIRMED"
    stock = await eventually(
        lambda: client.stock(sku),
        timeout=DEADLINE,
        what="committed",
        until=lambda s: s["sold"] == before["sold"] + 2,
    )
    payment = (await client.payment(order_id)).body
    await eventually(lambda: client.notifications(order_id), timeout=DEADLINE, what="notification")
    order = await client.order(order_id)
    originals = {topic: await records_of(shop.bootstrap, topic, order_id) for topic in SAGA}
    assert all(len(records) == 1 for records in originals.values()), originals

    duplicates, handled = _consumed(shop, "duplicate"), _consumed(shop, "handled")
    for topic, [record] in originals.items():
        headers = list(record.headers)
        # The very same message again (same event id) ...
        await publish(shop.bootstrap, topic, record.value, key=record.key, headers=headers)
        # ... and the same facts under a new event id, which the marker cannot catch.
        again = {**json.loads(record.value), "id": str(uuid.uuid4())}
        await publish(
            shop.bootstrap, topic, json.dumps(again).encode(), key=record.key, headers=headers
        )

    for (service, topic), count in duplicates.items():
        await _counted(shop, service, topic, "duplicate", count + 1)  # the same id
    for (service, topic), count in handled.items():
        await _counted(shop, service, topic, "handled", count + 1)  # the new id
    for topic, expected in EXPECTED.items():
        await eventually(
            functools.partial(records_of, shop.bootstrap, topic, order_id),
            timeout=DEADLINE,
            what=f"{expected} records of {topic}",
            until=functools.partial(_at_least, expected),
        )
    # A sentinel order through the whole saga: whatever the repeats had published would have
    # gone through by the time it is done.
    sentinel = await client.place(unique("c"), [{"sku": sku, "quantity": 1}])
    assert (await client.terminal(sentinel.body["id"]))["status"] == "CONFIRMED"
    await eventually(
        lambda: client.notifications(sentinel.body["id"]),
        timeout=DEADLINE,
        what="sentinel notified",
    )

    assert await client.order(order_id) == order  # status, timeline, updated_at untouched
    after = await client.stock(sku)
    assert (after["available"], after["reserved"], after["sold"]) == (
        stock["available"] - 1,
        0,
        stock["sold"] + 1,
    )  # only the sentinel's unit moved
    assert (await client.payment(order_id)).body == payment  # charged once
    assert len(await client.notifications(order_id)) == 1
    for topic, expected in EXPECTED.items():
        records = await records_of(shop.bootstrap, topic, order_id)
        # Ours (the original and the two repeats), the replays, and nothing more ...
        assert len(records) == expected, topic
        # ... every replay saying what the original said, under an id of its own.
        events = [json.loads(record.value) for record in records]
        assert all(event["data"] == events[0]["data"] for event in events), topic
        assert len({event["id"] for event in events}) == len(events) - 1, topic


def _at_least(count: int, records: list[Any]) -> bool:
    return len(records) >= count


async def _counted(shop: Shop, service: str, topic: str, outcome: str, target: float) -> None:
    async def count() -> float:
        return shop.services[service].metric(
            "kafka_messages_consumed_total", topic=topic, outcome=outcome
        )

    await eventually(
        count,
        timeout=DEADLINE,
        what=f"{service} counts {target:.0f} {outcome} {topic}",
        until=lambda value: value >= target,
    )


async def test_same_idempotency_key_gives_the_same_order(client: ShopClient, sku: str) -> None:
    customer = unique("c")
    key = {"Idempotency-Key": unique("key")}
    items = [{"sku": sku, "quantity": 1}]
    first = await client.place(customer, items, headers=key)
    second = await client.place(customer, items, headers=key)
    assert (first.status, second.status) == (202, 202)
    assert second.body["id"] == first.body["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"

    reused = await client.place(customer, [{"sku": sku, "quantity": 2}], headers=key)
    assert reused.status == 422
    assert reused.body["error"]["code"] == "idempotency_key_reused"
    # Keys are scoped per customer: another customer's identical key is another order.
    other = await client.place(unique("c"), items, headers=key)
    assert other.status == 202 and other.body["id"] != first.body["id"]

    bad = await client.place(customer, items, headers={"Idempotency-Key": "x" * 201})
    assert bad.status == 422 and "Idempotency-Key" in bad.body["error"]["message"]

    await client.terminal(first.body["id"])
    assert [o["id"] for o in await client.orders_of(customer)] == [first.body["id"]]
