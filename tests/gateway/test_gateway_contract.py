"""The public document follows discovery: a real gateway process and real upstream processes
(kit-built echo services whose v1 and v2 documents differ) registered in the test run's
registry. When a new version registers the document is read again; while two versions
disagree the document says so and follows the one the weights favour (else the newest)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from gw_support import Fleet, Gateway, get_json

from infra.process import wait_until


def document(gw: Gateway) -> dict[str, Any]:
    found = get_json(gw.url + "/openapi.json")
    assert isinstance(found, dict)
    return found


def orders_source(gw: Gateway) -> dict[str, Any]:
    return document(gw)["x-mesh-sources"][gw.services["orders"]]


def put_weights(gw: Gateway, weights: dict[str, int] | None) -> None:
    url = f"{gw.url}/admin/traffic/{gw.services['orders']}"
    data = json.dumps(weights).encode() if weights is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="PUT" if weights is not None else "DELETE",
        headers={**gw.admin_headers, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()


def status_and_allow(gw: Gateway, method: str, path: str) -> tuple[int, str | None]:
    request = urllib.request.Request(gw.url + path, method=method, headers=gw.key_headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers.get("Allow")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Allow")


def test_the_document_follows_versions_as_they_register(gateway: Gateway, fleet: Fleet) -> None:
    name = gateway.services["orders"]
    before = document(gateway)
    assert before["x-mesh-sources"][name]["follows"] is None
    assert "/api/orders/{id}" not in before["paths"]
    assert f"**{name}**: no document yet" in before["info"]["description"]

    fleet.start(name, "v1")
    v1 = wait_until(
        lambda: (doc := document(gateway))["paths"].get("/api/orders/{id}") and doc,
        timeout=10,
        what="v1's paths in the public document",
    )
    assert set(v1["paths"]["/api/orders/{id}"]) == {"get"}
    assert "/api/orders" not in v1["paths"]  # v1 documents no POST
    get = v1["paths"]["/api/orders/{id}"]["get"]
    pin = next(p for p in get["parameters"] if p["name"] == "X-Mesh-Version")
    assert pin["schema"]["enum"] == ["v1"]
    assert v1["x-mesh-sources"][name]["follows"] == "v1"
    # A 405's Allow says what the document gives this path, not the whole route.
    assert status_and_allow(gateway, "DELETE", "/api/orders/x") == (405, "GET")

    # v2 registers: its document is read, and it disagrees with v1's.
    fleet.start(name, "v2")
    two = wait_until(
        lambda: (
            set((s := orders_source(gateway))["versions"]) == {"v1", "v2"}
            and all(v["document"] for v in s["versions"].values())
            and s
        ),
        timeout=10,
        what="both versions' documents read",
    )
    assert two["versions_agree"] is False
    assert (two["follows"], two["why"]) == ("v2", "the newest version")
    doc = document(gateway)
    assert set(doc["paths"]["/api/orders"]) == {"post"}
    assert "DISAGREE" in doc["info"]["description"]
    enum = doc["paths"]["/api/orders/{id}"]["get"]["parameters"][-1]["schema"]["enum"]
    assert enum == ["v1", "v2"]

    # The weights favour v1: the document goes back to v1's.
    try:
        put_weights(gateway, {"v1": 90, "v2": 10})
        back = wait_until(
            lambda: (s := orders_source(gateway))["follows"] == "v1" and s,
            timeout=10,
            what="the document follows the weighted version",
        )
        assert back["why"] == "the largest traffic weight"
        assert "/api/orders" not in document(gateway)["paths"]
    finally:
        put_weights(gateway, None)
