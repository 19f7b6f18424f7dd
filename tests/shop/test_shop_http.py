"""What clients get wrong gets a 4xx JSON error, never a 5xx, and publishes nothing; reads of
unknown things are 404; the admin route wants its token; every route is in /openapi.json."""

from __future__ import annotations

import json
from typing import Any

import pytest
from shop_support import DEADLINE, Shop, ShopClient, eventually, records_of, unique

ITEM = {"sku": "SKU-001", "quantity": 1}


def _order(customer: str, **changes: Any) -> bytes:
    return json.dumps({"customer_id": customer, "items": [ITEM], **changes}).encode()


def _bad_bodies(customer: str) -> list[tuple[str, bytes, int, str | None]]:
    """(what, body, status, the field the message must name)."""
    lines = [{"sku": f"SKU-{n:03d}", "quantity": 1} for n in range(51)]
    return [
        ("malformed JSON", b'{"customer_id": ', 400, None),
        ("not an object", b"[]", 422, None),
        ("wrong type", _order(customer, items=[{**ITEM, "quantity": "2"}]), 422, "quantity"),
        ("quantity 0", _order(customer, items=[{**ITEM, "quantity": 0}]), 422, "quantity"),
        ("quantity 101", _order(customer, items=[{**ITEM, "quantity": 101}]), 422, "quantity"),
        ("unknown SKU", _order(customer, items=[ITEM, {**ITEM, "sku": "SKU-999"}]), 422, "1.sku"),
        ("no lines", _order(customer, items=[]), 422, "items"),
        ("51 lines", _order(customer, items=lines), 422, "items"),
        ("same SKU twice", _order(customer, items=[ITEM, ITEM]), 422, "items"),
        ("no customer", json.dumps({"items": [ITEM]}).encode(), 422, "customer_id"),
        ("unknown field", _order(customer, coupon="FREE"), 422, "coupon"),
        ("oversized", _order(customer, padding="x" * 70_000), 413, None),
    ]


CODES = {400: "malformed_json", 413: "payload_too_large", 422: "validation_error"}


async def test_bad_orders_get_4xx_json_and_publish_nothing(
    client: ShopClient, shop: Shop, sku: str
) -> None:
    customer = unique("bad")
    orders = shop.services["orders"]
    url = f"{shop.url('orders')}/orders"
    produced = orders.metric("kafka_messages_produced_total", topic="order.created")
    for what, body, status, field in _bad_bodies(customer):
        answer = await client.call(
            "POST", url, data=body, headers={"Content-Type": "application/json"}
        )
        assert (answer.status, answer.body["error"]["code"]) == (status, CODES[status]), what
        assert field is None or field in answer.body["error"]["message"], (what, answer.body)
    answer = await client.call(
        "POST", url, data=_order(customer), headers={"Content-Type": "text/plain"}
    )
    assert (answer.status, answer.body["error"]["code"]) == (415, "unsupported_media_type")

    # A good order after the bad ones: once its event is out, theirs would be too.
    sentinel = await client.place(unique("good"), [{"sku": sku, "quantity": 1}])
    assert sentinel.status == 202
    await eventually(
        lambda: records_of(shop.bootstrap, "order.created", sentinel.body["id"]),
        timeout=DEADLINE,
        what="the sentinel's order.created",
    )
    assert orders.metric("kafka_messages_produced_total", topic="order.created") == produced + 1
    assert await client.orders_of(customer) == []
    assert orders.metric("http_requests_total", route="/orders", status="500") == 0


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("orders", "/orders/01a20f00-0000-7000-8000-000000000000"),
        ("inventory", "/stock/SKU-999"),
        ("payments", "/payments/no-such-order"),
        ("orders", "/nowhere"),
    ],
)
async def test_unknown_things_are_404_json(
    client: ShopClient, shop: Shop, service: str, path: str
) -> None:
    answer = await client.call("GET", shop.url(service) + path)
    assert (answer.status, answer.body["error"]["code"]) == (404, "not_found")


async def test_queries_are_validated(client: ShopClient, shop: Shop) -> None:
    for url in (
        f"{shop.url('orders')}/orders",  # customer_id is required
        f"{shop.url('orders')}/orders?customer_id=c-1&limit=500",
        f"{shop.url('orders')}/orders?customer_id=c-1&cursor=not-an-id",
        f"{shop.url('notifications')}/notifications?limit=0",
    ):
        answer = await client.call("GET", url)
        assert (answer.status, answer.body["error"]["code"]) == (422, "validation_error"), url


async def test_setting_stock_needs_the_admin_token(client: ShopClient, shop: Shop) -> None:
    url = f"{shop.url('inventory')}/stock/SKU-024"
    body = {"available": 7}
    missing = await client.call("PUT", url, json_body=body)
    assert (missing.status, missing.body["error"]["code"]) == (401, "unauthorized")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.call("PUT", url, json_body=body, headers={"Authorization": "Bearer no"})
    assert (wrong.status, wrong.body["error"]["code"]) == (403, "forbidden")
    token = {"Authorization": f"Bearer {shop.env['ADMIN_TOKEN']}"}
    negative = await client.call("PUT", url, json_body={"available": -1}, headers=token)
    assert (negative.status, negative.body["error"]["code"]) == (422, "validation_error")
    other_header = {"X-Admin-Token": shop.env["ADMIN_TOKEN"]}
    wrong_type = await client.call("PUT", url, json_body={"available": "7"}, headers=other_header)
    assert wrong_type.status == 422  # past the token check
    unknown = await client.call(
        "PUT", f"{shop.url('inventory')}/stock/SKU-999", json_body=body, headers=token
    )
    assert unknown.status == 404


async def test_catalogue_has_at_least_20_priced_skus(client: ShopClient, shop: Shop) -> None:
    answer = await client.call("GET", f"{shop.url('inventory')}/stock")
    stock = answer.body["stock"]
    assert len(stock) >= 20
    for item in stock:
        assert set(item) >= {"sku", "name", "price", "available", "reserved"}
        assert isinstance(item["price"], int) and item["price"] > 0


@pytest.mark.parametrize(
    ("service", "paths"),
    [
        ("orders", {"/orders", "/orders/{id}"}),
        ("inventory", {"/stock", "/stock/{sku}"}),
        ("payments", {"/payments/{order_id}"}),
        ("notifications", {"/notifications", "/notifications/stream"}),
    ],
)
async def test_openapi_documents_every_route(
    client: ShopClient, shop: Shop, service: str, paths: set[str]
) -> None:
    document = (await client.call("GET", f"{shop.url(service)}/openapi.json")).body
    assert paths <= set(document["paths"])
    for path in paths:
        for operation in document["paths"][path].values():
            success = next(code for code in operation["responses"] if code.startswith("2"))
            assert "content" in operation["responses"][success], (path, operation)
