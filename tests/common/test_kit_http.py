"""The app factory, on a real sample-service process: probes, metrics, OpenAPI, JSON errors,
request ids, and the Consul registration with its HTTP check."""

from __future__ import annotations

import json

import pytest
from kit_support import Sample, consul_sync, http

from infra.process import wait_until


@pytest.fixture
def sample(shared_sample: Sample) -> Sample:
    return shared_sample


def test_liveness_and_readiness(sample: Sample) -> None:
    status, _, body = sample.request("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, _, body = sample.request("GET", "/readyz")
    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"] == {"redis": "ok", "kafka": "ok"}
    # HEAD is answered wherever GET is (probes of load balancers send it), without a body.
    status, headers, body = sample.request("HEAD", "/healthz")
    assert (status, body) == (200, "")
    assert int(headers["Content-Length"]) > 0


def test_business_route_works_and_metrics_move(sample: Sample) -> None:
    before = sample.metric(
        "http_requests_total", route="/items", method="POST", status="202", version="v3"
    )
    status, headers, body = sample.request("POST", "/items", {"name": "x", "quantity": 2})
    assert status == 202
    assert headers["Location"] == f"/items/{body['id']}"
    status, _, fetched = sample.request("GET", f"/items/{body['id']}")
    assert status == 200
    assert fetched == {"id": body["id"], "name": "x", "quantity": 2}
    after = sample.metric(
        "http_requests_total", route="/items", method="POST", status="202", version="v3"
    )
    assert after == before + 1
    assert sample.metric("http_request_duration_seconds_count", route="/items/{id}") >= 1
    # Probes and scrapes are not load: the scrape itself is not counted in flight.
    assert sample.metric("http_requests_in_flight", service=sample.name) == 0
    # The event goes through the outbox to Kafka and back to the sample's own consumer.
    wait_until(
        lambda: sample.metric("kafka_messages_consumed_total", outcome="handled") >= 1,
        timeout=10,
        what="consumed counter",
    )
    assert sample.metric("kafka_messages_produced_total", topic=sample.topic) >= 1
    assert sample.metric("outbox_published_total") >= 1


def test_openapi_document(sample: Sample) -> None:
    status, _, doc = sample.request("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == "v3"
    post = doc["paths"]["/items"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["quantity"]["minimum"] == 1
    assert set(post["responses"]) >= {"202", "400", "413", "415", "422", "500"}
    get = doc["paths"]["/items/{id}"]["get"]
    assert get["parameters"][0] == {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    assert "404" in get["responses"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(doc["paths"])


JSON = "application/json"
CLIENT_ERRORS = [
    ("POST", "/items", b'{"name": "x", "quantity": ', JSON, 400, "malformed_json"),
    ("GET", "/nowhere", None, JSON, 404, "not_found"),
    ("PATCH", "/items", b"{}", JSON, 405, "method_not_allowed"),
    ("POST", "/items", b"x" * 4096, JSON, 413, "payload_too_large"),
    ("POST", "/items", b"name=x", "text/plain", 415, "unsupported_media_type"),
    ("POST", "/items", b'{"name": "x", "quantity": 0}', JSON, 422, "validation_error"),
    ("POST", "/items", b'{"name": "x", "quantity": "two"}', JSON, 422, "validation_error"),
    ("POST", "/items", b"[1, 2]", JSON, 422, "validation_error"),
    ("GET", "/items/missing", None, JSON, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code"), CLIENT_ERRORS
)
def test_client_errors_are_json(
    sample: Sample,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str,
    status: int,
    code: str,
) -> None:
    got, headers, raw = http(method, sample.url + path, body, {"Content-Type": content_type})
    assert got == status, raw
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert error["code"] == code
    assert error["message"]
    if status == 405:
        assert "POST" in headers["Allow"]
    if status == 422 and b"quantity" in (body or b""):
        assert "quantity" in error["message"]


def test_unexpected_exception_is_a_500_without_internals(sample: Sample) -> None:
    status, headers, body = sample.request("GET", "/boom")
    assert status == 500
    assert body == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "X-Request-Id" in headers
    assert "/boom" not in sample.request("GET", "/openapi.json")[2]["paths"]


def test_admin_routes_need_the_token(sample: Sample) -> None:
    _, _, item = sample.request("POST", "/items", {"name": "gone", "quantity": 1})
    path = f"/items/{item['id']}"
    status, headers, body = sample.request("DELETE", path)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert headers["WWW-Authenticate"] == "Bearer"
    status, _, body = sample.request("DELETE", path, headers={"X-Admin-Token": "nope"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert sample.request("GET", path)[0] == 200
    status, _, _ = sample.request("DELETE", path, headers={"Authorization": "Bearer t0k"})
    assert status == 204
    assert sample.request("GET", path)[0] == 404


def test_request_id_is_echoed_or_made(sample: Sample) -> None:
    _, headers, _ = sample.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
    assert headers["X-Request-Id"] == "abc-123"
    for unsafe in ("has spaces; and <tags>", "x" * 200):
        _, headers, _ = sample.request("GET", "/nowhere", headers={"X-Request-Id": unsafe})
        assert len(headers["X-Request-Id"]) == 32  # a fresh one replaces it


def test_registered_in_consul_with_passing_check(sample: Sample, consul_addr: str) -> None:
    client = consul_sync(consul_addr)
    services = wait_until(
        lambda: client.agent.services().get(sample.instance_id),
        timeout=10,
        what="registration",
    )
    assert services["Service"] == sample.name
    assert services["Meta"] == {"version": "v3"}
    assert services["Port"] == sample.port
    assert "v3" in services["Tags"]
    nodes = wait_until(
        lambda: client.health.service(sample.name, passing=True)[1],
        timeout=10,
        what="passing check",
    )
    assert [n["Service"]["ID"] for n in nodes] == [sample.instance_id]
    check = next(iter(nodes[0]["Checks"][-1:]))
    assert check["Status"] == "passing"
