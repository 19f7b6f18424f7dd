"""The restock policy (INVENTORY_RESTOCK): stock that fell below the level comes back up to it
every interval, each restock announced as ``inventory.restocked`` (read off Kafka here), the
manual PUT still works beside it, and every runtime the project ships turns it on.

On a shop of its own (tansu, valkey and the Consul registry of this module): the restock
writes every SKU's stock, which the session's shared shop must not see.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import yaml
from shop_support import (
    DEADLINE,
    ROOT,
    Shop,
    ShopClient,
    eventually,
    records_of,
    running_shop,
    unique,
)

from infra.embedded import Infra
from services.inventory.settings import InventorySettings, RestockPolicy

LEVEL = 5
POLICY = f"{LEVEL} every 300ms"
TOPIC = "inventory.restocked"


@pytest.fixture(scope="module")
def restocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    home = tmp_path_factory.mktemp("restock")
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR")
    }
    with Infra(home / "infra", environ=environ) as infra:
        with running_shop(infra.endpoints, home, INVENTORY_RESTOCK=POLICY) as shop:
            yield shop


@pytest.fixture
async def client(restocking: Shop) -> AsyncIterator[ShopClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield ShopClient(restocking, session)


async def _restocked(shop: Shop, sku: str, count: int) -> list[dict[str, object]]:
    records = await records_of(shop.bootstrap, TOPIC, sku)
    if len(records) < count:
        return []
    for record in records:
        assert dict(record.headers).get("traceparent"), "the restock's trace goes along"
    return [json.loads(record.value) for record in records]


async def test_stock_below_the_level_comes_back_up_and_is_announced(
    client: ShopClient, restocking: Shop
) -> None:
    untouched = await client.stock("SKU-002")
    assert untouched["available"] == 1000, "above the level: the policy leaves it alone"

    await client.set_stock("SKU-001", 1)  # the admin's manual PUT, beside the policy
    await eventually(
        lambda: client.stock("SKU-001"),
        timeout=DEADLINE,
        what="SKU-001 back up to the level",
        until=lambda item: item["available"] == LEVEL,
    )
    [first] = await eventually(
        lambda: _restocked(restocking, "SKU-001", 1), timeout=DEADLINE, what="the first event"
    )
    assert first["type"] == TOPIC and first["order_id"] == "SKU-001"
    assert first["data"] == {"sku": "SKU-001", "added": LEVEL - 1, "available": LEVEL}

    # An order takes all of it: confirmed, and the policy brings the SKU back again.
    placed = await client.place(unique("c"), [{"sku": "SKU-001", "quantity": LEVEL}])
    assert (await client.terminal(placed.body["id"]))["status"] == "CONFIRMED"
    item = await eventually(
        lambda: client.stock("SKU-001"),
        timeout=DEADLINE,
        what="SKU-001 sold and restocked",
        until=lambda item: item["sold"] == LEVEL and item["available"] == LEVEL,
    )
    assert item["reserved"] == 0
    events = await eventually(
        lambda: _restocked(restocking, "SKU-001", 2), timeout=DEADLINE, what="the second event"
    )
    assert [e["data"]["added"] for e in events] == [LEVEL - 1, LEVEL]
    assert (await client.stock("SKU-002"))["available"] == 1000
    assert restocking.services["inventory"].metric("inventory_restocked_units_total") == (
        2 * LEVEL - 1
    )


def test_every_runtime_the_project_ships_turns_restock_on() -> None:
    platform = tomllib.loads((ROOT / "infra/local/platform.toml").read_text())
    [inventory] = [s for s in platform["service"] if s["name"] == "inventory"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kustomization = yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())
    [config] = [c for c in kustomization["configMapGenerator"] if c["name"] == "inventory-config"]
    k8s = dict(literal.split("=", 1) for literal in config["literals"])
    for where, value in (
        ("local", inventory["env"]["INVENTORY_RESTOCK"]),
        ("compose", compose["services"]["inventory"]["environment"]["INVENTORY_RESTOCK"]),
        ("k8s", k8s["INVENTORY_RESTOCK"]),
    ):
        policy = InventorySettings(INVENTORY_RESTOCK=value).INVENTORY_RESTOCK
        assert isinstance(policy, RestockPolicy), where
        assert policy.level >= 1000 and policy.every <= 60, (where, policy)


def test_restock_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVENTORY_RESTOCK", raising=False)
    assert InventorySettings().INVENTORY_RESTOCK is None
    assert InventorySettings(INVENTORY_RESTOCK="off").INVENTORY_RESTOCK is None
