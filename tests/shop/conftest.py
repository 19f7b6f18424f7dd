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
from shop_support import SERVICES, ServiceProcess, Shop, ShopClient, shop_env

from infra.embedded import Endpoints
from infra.process import wait_until

# SKU-001 .. SKU-024 are seeded by inventory; each test that touches stock takes its own.
_SKUS = itertools.count(1)
CATALOG_SIZE = 24


@pytest.fixture(scope="session")
def shop(infra: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    home = tmp_path_factory.mktemp("shop")
    env = shop_env(infra.env(), home / "traces")
    log_dir = home / "logs"
    services = {name: ServiceProcess(name, env, log_dir) for name in SERVICES}
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            service.wait_ready()
        # Consumer groups take a few seconds to form on tansu: paid once, here.
        for service in services.values():
            wait_until(
                service.consuming,
                timeout=30,
                what=f"{service.name} has its partitions",
                alive=service.proc.alive,
            )
        yield Shop(
            services=services,
            env=env,
            log_dir=log_dir,
            traces_dir=home / "traces",
            bootstrap=infra.kafka_bootstrap,
            consul_addr=infra.consul_addr,
            redis_url=infra.redis_url,
        )
    finally:
        for service in services.values():
            service.stop()


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
