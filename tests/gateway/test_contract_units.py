"""The public document's building rules, on documents made by the kit's own builder."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.contract import Source, VersionSeen, build_public, choose_version, digest
from gateway.routes import ROUTES_FILE, RouteTable
from services.common.openapi import Header, Route, build_openapi


async def _handler(request: Any) -> Any:
    raise NotImplementedError


class Item(BaseModel):  # the same name in two services, two different shapes
    sku: str


def _service(name: str, routes: list[Route]) -> Source:
    document = build_openapi(title=name, version="v1", description=name, routes=routes)
    return Source(name, {"v1": VersionSeen(1, None, digest(document))}, "v1", document, "only")


def _inventory() -> Source:
    return _service(
        "inventory",
        [
            Route("GET", "/stock/{sku}", _handler, response=Item),
            Route("PUT", "/stock/{sku}", _handler, body=Item, auth=("adminBearer",)),
        ],
    )


def _notifications() -> Source:
    class Item(BaseModel):
        order_id: str

    return _service(
        "notifications",
        [
            Route("GET", "/notifications", _handler, response=Item),
            Route("GET", "/notifications/stream", _handler, response_content_type="x/y"),
        ],
    )


def _build(*sources: Source) -> dict[str, Any]:
    table = RouteTable.load(ROUTES_FILE)
    return build_public(table, {s.service: s for s in sources}, title="t", version="v9")


def test_paths_are_public_and_only_the_routes_methods() -> None:
    doc = _build(_inventory(), _notifications())
    assert set(doc["paths"]) == {
        "/api/stock/{sku}",
        "/api/notifications",
        "/api/notifications/stream",
    }
    assert set(doc["paths"]["/api/stock/{sku}"]) == {"get"}  # the route allows GET only
    assert doc["security"] == [{"apiKey": []}]
    get = doc["paths"]["/api/stock/{sku}"]["get"]
    assert get["tags"] == ["inventory"]
    assert {"401", "403", "405", "429", "502", "503", "504"} <= set(get["responses"])
    # the stream's route has no timeout: no 504 there
    assert "504" not in doc["paths"]["/api/notifications/stream"]["get"]["responses"]


def test_headers_of_instance_answers_and_of_gateway_answers() -> None:
    get = _build(_inventory())["paths"]["/api/stock/{sku}"]["get"]
    ok = get["responses"]["200"]["headers"]
    assert ok["X-Mesh-Upstream-Version"]["required"] is True
    assert ok["X-Request-Id"]["required"] is True
    assert get["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert get["responses"]["405"]["headers"]["Allow"]["required"] is True
    # 404 and 503 come from the service or from the gateway: the upstream's version only
    # comes with the service's, Retry-After with both 503s.
    both = get["responses"]["503"]
    assert both["headers"]["X-Mesh-Upstream-Version"]["required"] is False
    assert both["headers"]["Retry-After"]["required"] is True
    assert "from the gateway" in both["description"]
    assert "X-Mesh-Upstream-Version" not in get["responses"]["401"]["headers"]


def test_same_named_schemas_that_differ_are_kept_apart() -> None:
    doc = _build(_inventory(), _notifications())
    schemas = doc["components"]["schemas"]
    assert schemas["Item"]["required"] == ["sku"]
    assert schemas["NotificationsItem"]["required"] == ["order_id"]
    ref = doc["paths"]["/api/notifications"]["get"]["responses"]["200"]["content"]
    assert ref["application/json"]["schema"] == {"$ref": "#/components/schemas/NotificationsItem"}
    # the kit's error schema: one copy, shared by the gateway and both services
    assert sorted(schemas) == ["Error", "ErrorDetail", "FieldError", "Item", "NotificationsItem"]


def test_unsafe_methods_get_the_idempotency_key() -> None:
    orders = _service(
        "orders",
        [Route("POST", "/orders", _handler, request_headers=(Header("Idempotency-Key", "x"),))],
    )
    post = _build(orders)["paths"]["/api/orders"]["post"]
    names = [p["name"] for p in post["parameters"]]
    assert names.count("Idempotency-Key") == 1 and "X-Mesh-Version" in names
    key = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert "retries" in key["description"]


def test_which_version_a_document_follows() -> None:
    def seen(instances: int, weight: int | None, doc: str | None = "d") -> VersionSeen:
        return VersionSeen(instances, weight, doc)

    assert choose_version({"v1": seen(1, None, None)}) == (None, "no document read yet")
    assert choose_version({"v1": seen(3, 90), "v2": seen(1, 10)})[0] == "v1"
    assert choose_version({"v1": seen(1, None), "v2": seen(3, None)}) == (
        "v2",
        "the most instances",
    )
    assert choose_version({"v1": seen(1, None), "v2": seen(1, None, None)})[0] == "v1"
