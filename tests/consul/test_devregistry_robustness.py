"""The development registry never answers 5xx for what a client sent (registry-only).

Real Consul answers some of these with a 500 (e.g. ``?flags=abc``), so these tests run
in-process against the registry itself rather than through ``consul_addr``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.consul.devregistry import make_app
from infra.consul.devregistry.definitions import PayloadError, parse_service
from infra.consul.devregistry.state import NodeInfo, Registry

FIELDS = [
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Weights",
    "Check",
    "Checks",
    "TaggedAddresses",
    "HTTP",
    "TCP",
    "TTL",
    "Interval",
    "Timeout",
    "Status",
    "CheckID",
    "DeregisterCriticalServiceAfter",
    "Header",
    "Passing",
]
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_durations = st.sampled_from(["1s", "200ms", "0", "-1s", "1x", "", "10m"])
_keys = st.sampled_from(FIELDS).flatmap(
    lambda key: st.sampled_from([key, key.lower(), key.upper()])
)
_json = st.recursive(
    _scalars | _durations,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_keys | st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(_keys, _json, max_size=8))
def test_any_register_payload_is_accepted_or_refused_cleanly(payload: dict[str, Any]) -> None:
    registry = Registry(NodeInfo(name="n", node_id="i", address="127.0.0.1"))
    try:
        definition = parse_service(payload)
    except PayloadError:
        return
    registry.register_service(definition)
    assert definition.id in registry.services


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app())) as test_client:
        yield test_client


JUNK = [
    ("PUT", "/v1/kv/k?flags=abc", b"", 400),
    ("PUT", "/v1/kv/k?cas=-1", b"", 400),
    ("PUT", "/v1/kv/k?cas=%C2%B2", b"", 400),
    ("PUT", "/v1/kv/k?cas=1&acquire=s", b"", 400),
    ("PUT", "/v1/kv/k?acquire=s", b"", 400),
    ("PUT", "/v1/kv/", b"v", 400),
    ("DELETE", "/v1/kv/", b"", 400),
    ("DELETE", "/v1/kv/k?recurse&cas=1", b"", 400),
    ("GET", "/v1/kv/", b"", 400),
    ("GET", "/v1/kv/k?index=99999999999999999999999", b"", 400),
    ("GET", "/v1/health/service/", b"", 400),
    ("GET", "/v1/health/service/x?dc=elsewhere", b"", 400),
    ("GET", "/v1/health/state/bogus", b"", 400),
    ("GET", "/v1/agent/services?filter=Service%3D%3Dx", b"", 400),
    ("PUT", "/v1/agent/service/register", b"\xff\xfe", 400),
    ("PUT", "/v1/agent/service/register", b"[" * 100_000, 400),
    ("PUT", "/v1/agent/service/register", b"null", 400),
    ("PUT", "/v1/agent/check/register", b'{"TTL": "1s"}', 400),
    ("PUT", "/v1/agent/check/register", b'{"Name": "c", "TTL": "1s", "ServiceID": "no"}', 404),
    ("PUT", "/v1/agent/check/update/x", b"[]", 400),
    ("PUT", "/v1/agent/check/update/x", b'{"Status": "sleepy"}', 400),
    ("PUT", "/v1/agent/check/deregister/serfHealth", b"", 404),
    ("PUT", "/v1/agent/service/deregister/consul", b"", 404),
    ("POST", "/v1/status/leader", b"", 405),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), JUNK)
async def test_junk_requests_get_a_4xx(
    client: TestClient[Any, Any], method: str, path: str, body: bytes, status: int
) -> None:
    response = await client.request(method, path, data=body)
    assert response.status == status, await response.text()


async def test_ttl_update_of_a_non_ttl_check_is_a_client_error(
    client: TestClient[Any, Any],
) -> None:
    payload = {"Name": "web", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "1h"}}
    response = await client.put("/v1/agent/service/register", data=json.dumps(payload))
    assert response.status == 200
    response = await client.put("/v1/agent/check/pass/service:web")
    assert response.status == 400
    assert "does not have associated TTL" in await response.text()
