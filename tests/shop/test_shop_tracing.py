"""One order is one trace across orders, inventory, payments and notifications; every
consumer span is a child of the producer span of the message it handled."""

from __future__ import annotations

from shop_support import DEADLINE, Shop, ShopClient, eventually, unique, whole_trace

TRACE_ID = "5d1e0f3a9c7b48e2a1f06c3b2d4e5f60"
CALLER_SPAN = "a1b2c3d4e5f60718"
SERVICES = {"orders", "inventory", "payments", "notifications"}


async def test_one_order_is_one_trace_across_the_four_services(
    client: ShopClient, shop: Shop, sku: str
) -> None:
    await client.set_stock(sku, 5)
    placed = await client.place(
        unique("c"),
        [{"sku": sku, "quantity": 1}],
        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
    )
    assert (await client.terminal(placed.body["id"]))["status"] == "CONFIRMED"
    spans = await eventually(
        lambda: whole_trace(shop.traces_dir, TRACE_ID, CALLER_SPAN),
        timeout=DEADLINE,
        what="the whole trace",
    )

    assert {s["service"] for s in spans} == SERVICES
    [server] = [s for s in spans if s["kind"] == "SERVER"]
    assert (server["service"], server["name"]) == ("orders", "POST /orders")
    assert server["parent_span_id"] == CALLER_SPAN
    by_id = {s["span_id"]: s for s in spans}
    producers = [s for s in spans if s["kind"] == "PRODUCER"]
    assert {s["name"] for s in producers} >= {
        "send order.created",
        "send inventory.reserved",
        "send payment.succeeded",
        "send order.confirmed",
    }
    for consumer in (s for s in spans if s["kind"] == "CONSUMER"):
        parent = by_id[consumer["parent_span_id"]]  # child-of, not a link
        assert parent["kind"] == "PRODUCER"
        message = consumer["attributes"]["messaging.message.id"]
        assert parent["attributes"]["messaging.message.id"] == message
        assert consumer["attributes"]["messaging.kafka.message.key"] == placed.body["id"]
    for span in spans:  # every span hangs from the caller's, through its parents
        while span["parent_span_id"] != CALLER_SPAN:
            span = by_id[span["parent_span_id"]]
