"""A healthy order's trace carries no error span: inventory's Lua scripts are in Redis before
its first order, and again after Redis restarted (a restart empties the script cache).

On a shop of its own: tansu and the Consul registry of this test, and a Redis of its own that
the test really restarts (``SHUTDOWN SAVE`` and the same command line again, so the data
stays, as with a Redis that persists). The four services are real processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from shop_support import (
    DEADLINE,
    Shop,
    ShopClient,
    eventually,
    running_shop,
    unique,
    whole_trace,
)

from infra.embedded import Infra


@pytest.fixture
def fresh_shop(redis_server: Any, tmp_path: Path) -> Iterator[Shop]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR")
    }
    environ["REDIS_URL"] = redis_server.url
    with Infra(tmp_path / "infra", environ=environ) as infra:
        with running_shop(infra.endpoints, tmp_path) as shop:
            yield shop


async def _confirmed_order_trace(client: ShopClient, shop: Shop) -> list[dict[str, Any]]:
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    placed = await client.place(
        unique("c"),
        [{"sku": "SKU-001", "quantity": 1}, {"sku": "SKU-002", "quantity": 2}],
        headers={"traceparent": f"00-{trace_id}-{caller}-01"},
    )
    assert placed.status == 202, placed
    assert (await client.terminal(placed.body["id"]))["status"] == "CONFIRMED"
    return await eventually(
        lambda: whole_trace(shop.traces_dir, trace_id, caller),
        timeout=DEADLINE,
        what=f"the whole trace {trace_id}",
    )


def _errors(spans: list[dict[str, Any]]) -> list[str]:
    failed = [s for s in spans if s["status"] == "ERROR"]
    return [f"{s['service']}: {s['name']}: {s['status_message']}" for s in failed]


async def test_a_healthy_orders_trace_has_no_error_span_after_a_start_or_a_redis_restart(
    fresh_shop: Shop, redis_server: Any
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        client = ShopClient(fresh_shop, session)

        first = await _confirmed_order_trace(client, fresh_shop)
        reserve = [s for s in first if s["service"] == "inventory" and s["name"] == "EVALSHA"]
        assert reserve, "the reservation's script ran in the order's trace"
        assert _errors(first) == [], "the first order of a fresh inventory"

        redis_server.restart()
        for service in fresh_shop.services.values():
            service.wait_ready()
        again = await _confirmed_order_trace(client, fresh_shop)
        assert _errors(again) == [], "the first order after Redis restarted"
