"""The gateway's spans as the exporter writes them: a real gateway, a real echo upstream, the
span file the kit's exporter writes (``MESH_TRACES_DIR/gateway.jsonl``)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from gw_support import Fleet, Gateway, start_gateway
from test_gateway import wait_instances

from infra.embedded import Endpoints
from infra.process import async_wait_until


@pytest.fixture
def traced(infra: Endpoints, tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    home = tmp_path / "gw"
    gw = start_gateway(infra.env(), home, OTEL_TRACES_SAMPLER_ARG="1.0")
    yield gw, home / "traces" / "gateway.jsonl"
    gw.process.stop(timeout=10)


def spans_of(path: Path, trace_id: str) -> list[dict]:
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [s for s in spans if s["trace_id"] == trace_id]


async def test_a_sampled_request_has_a_server_span_and_a_client_span_per_attempt(
    traced: tuple[Gateway, Path], fleet: Fleet
) -> None:
    gw, path = traced
    upstream = fleet.start(gw.services["orders"])
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gw, "orders", 1)
        async with session.get(
            gw.url + "/api/orders/42?status=500",
            headers={
                **gw.key_headers,
                "traceparent": f"00-{trace_id}-{parent_id}-01",
                "User-Agent": "span-test",
            },
        ) as r:
            assert r.status == 500
        async with session.get(
            gw.url + "/api/orders/43",
            headers={**gw.key_headers, "traceparent": f"00-{trace_id}-{parent_id}-01"},
        ) as r:
            assert r.status == 200
            seen = (await r.json())["headers"]

    async def four_spans() -> bool:
        return len(spans_of(path, trace_id)) >= 4

    await async_wait_until(four_spans, timeout=10, what="the gateway's spans in its span file")
    spans = spans_of(path, trace_id)
    assert len(spans) == 4
    servers = [s for s in spans if s["kind"] == "SERVER"]
    clients = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(servers) == 2 and len(clients) == 2
    failed, ok = sorted(servers, key=lambda s: s["start_unix_nano"])
    for server in servers:
        # A child of the client's span, named by its route, in the gateway's resource.
        assert server["parent_span_id"] == parent_id
        assert server["name"] == "GET /api/orders"
        assert server["service"] == "gateway"
        assert server["end_unix_nano"] >= server["start_unix_nano"]
    assert failed["attributes"] == {
        "http.request.method": "GET",
        "url.path": "/api/orders/42",
        "url.scheme": "http",
        "client.address": "127.0.0.1",
        "user_agent.original": "span-test",
        "http.route": "/api/orders",
        "http.response.status_code": 500,
    }
    assert failed["status"] == "ERROR" and ok["status"] == "UNSET"
    by_parent = {c["parent_span_id"]: c for c in clients}
    assert set(by_parent) == {failed["span_id"], ok["span_id"]}
    failed_attempt, ok_attempt = by_parent[failed["span_id"]], by_parent[ok["span_id"]]
    assert failed_attempt["status"] == "ERROR" and ok_attempt["status"] == "UNSET"
    assert ok_attempt["name"] == "GET"
    assert ok_attempt["attributes"] == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "mesh.upstream.instance": upstream.instance_id,
        "mesh.upstream.version": "v1",
        "http.response.status_code": 200,
    }
    # The upstream got the attempt's context: same trace, the CLIENT span as its parent.
    assert seen["traceparent"] == f"00-{trace_id}-{ok_attempt['span_id']}-01"


async def test_an_unsampled_request_records_nothing_and_passes_its_context_on(
    traced: tuple[Gateway, Path], fleet: Fleet
) -> None:
    gw, path = traced
    fleet.start(gw.services["orders"])
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    sampled_id = secrets.token_hex(16)
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gw, "orders", 1)
        async with session.get(
            gw.url + "/api/orders/1",
            headers={**gw.key_headers, "traceparent": f"00-{trace_id}-{parent_id}-00"},
        ) as r:
            assert r.status == 200
            seen = (await r.json())["headers"]
        # A sampled request after it: once its spans are written, the unsampled one's would be.
        async with session.get(
            gw.url + "/api/orders/2",
            headers={**gw.key_headers, "traceparent": f"00-{sampled_id}-{parent_id}-01"},
        ) as r:
            assert r.status == 200

    async def sampled_written() -> bool:
        return len(spans_of(path, sampled_id)) == 2

    await async_wait_until(sampled_written, timeout=10, what="the sampled request's spans")
    assert spans_of(path, trace_id) == []
    version, got_trace, span_id, flags = seen["traceparent"].split("-")
    assert (version, got_trace, flags) == ("00", trace_id, "00")
    assert span_id != parent_id and int(span_id, 16) != 0  # the gateway's own (unrecorded) span
