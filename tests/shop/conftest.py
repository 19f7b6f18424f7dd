"""The shop's four services as real processes, once per test session, on the session's
infrastructure (tests/conftest.py: tansu, valkey/redis, the Consul registry, on loopback).

Services and Redis are shared by every test: tests use their own customer ids and SKUs (the
``sku`` fixture hands out a different catalogue SKU to each test) so that they do not see
each other's orders or stock, whatever their order.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from shop_support import ServiceProcess, Shop, ShopClient, running_shop

from infra.embedded import Endpoints

# SKU-001 .. SKU-024 are seeded by inventory; each test that touches stock takes its own.
_SKUS = itertools.count(1)
CATALOG_SIZE = 24


@pytest.fixture(scope="session")
def shop(infra: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    # Consumer groups take a few seconds to form on tansu: paid once, here.
    with running_shop(infra, tmp_path_factory.mktemp("shop")) as shop:
        yield shop


@pytest.fixture
async def client(shop: Shop) -> AsyncIterator[ShopClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield ShopClient(shop, session)


@pytest.fixture
def sku() -> str:
    """A catalogue SKU no other test of this session uses."""
    number = next(_SKUS)
    assert number <= CATALOG_SIZE, "more stock-touching tests than catalogue SKUs"
    return f"SKU-{number:03d}"


@pytest.fixture
async def redis_client(shop: Shop) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(shop.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def extra_instances(shop: Shop) -> Iterator[list[ServiceProcess]]:
    """Additional service processes a test starts; all stopped at the end of the test."""
    made: list[ServiceProcess] = []
    yield made
    for service in made:
        service.stop()
