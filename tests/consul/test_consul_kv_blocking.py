"""Contract tests of the KV store and of blocking queries, through py-consul (sync and aio).

They run unchanged against a real Consul. Every test works under its own key prefix and
service names. "Not before" is shown by a bounded wait that must time out while unrelated
writes happen; "when it changes" by the same query returning right after the write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import consul
import consul.aio
import pytest
import requests

pytestmark = pytest.mark.filterwarnings("ignore:ssl_context is deprecated:DeprecationWarning")

# Long enough to show a blocked query stays blocked, short enough to keep the suite quick.
STILL_BLOCKED = 0.5


def _parts(addr: str) -> dict[str, Any]:
    url = urlsplit(addr)
    return {"host": url.hostname, "port": url.port, "scheme": url.scheme}


@pytest.fixture
def sync_client(consul_addr: str) -> consul.Consul:
    return consul.Consul(**_parts(consul_addr))


@pytest.fixture
async def aio_client(consul_addr: str) -> AsyncIterator[consul.aio.Consul]:
    client = consul.aio.Consul(**_parts(consul_addr))
    yield client
    await client.http.close()


@pytest.fixture
def prefix(sync_client: consul.Consul) -> Iterator[str]:
    """A key prefix of this test's own, removed afterwards."""
    root = f"devregistry-tests/{uuid.uuid4().hex}/"
    yield root
    sync_client.kv.delete(root, recurse=True)


async def assert_still_blocked(task: asyncio.Task[Any]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), STILL_BLOCKED)


# -- KV ------------------------------------------------------------------------------------


def test_put_get_and_flags(sync_client: consul.Consul, prefix: str) -> None:
    key = f"{prefix}traffic/orders"
    assert sync_client.kv.put(key, '{"v1": 90, "v2": 10}', flags=42) is True
    index, entry = sync_client.kv.get(key)
    assert entry["Key"] == key
    assert entry["Value"] == b'{"v1": 90, "v2": 10}'
    assert entry["Flags"] == 42
    assert entry["LockIndex"] == 0
    assert entry["CreateIndex"] == entry["ModifyIndex"] == int(index)

    sync_client.kv.put(key, b"\x00\xffbinary")
    index2, entry = sync_client.kv.get(key)
    assert entry["Value"] == b"\x00\xffbinary"
    assert entry["Flags"] == 0  # a put without ?flags resets them, as in Consul
    assert entry["ModifyIndex"] == int(index2) > int(index)
    assert entry["CreateIndex"] == int(index)


def test_missing_key(sync_client: consul.Consul, prefix: str, consul_addr: str) -> None:
    index, entry = sync_client.kv.get(f"{prefix}nothing")
    assert entry is None
    assert int(index) > 0
    response = requests.get(f"{consul_addr}/v1/kv/{prefix}nothing", timeout=5)
    assert response.status_code == 404
    assert response.content == b""
    assert int(response.headers["X-Consul-Index"]) > 0
    assert sync_client.kv.get(prefix, recurse=True)[1] is None


def test_recurse_keys_and_separator(sync_client: consul.Consul, prefix: str) -> None:
    for key in ("a", "b/one", "b/two", "b/deeper/three", "c"):
        sync_client.kv.put(f"{prefix}{key}", key)

    _, entries = sync_client.kv.get(f"{prefix}b/", recurse=True)
    assert [e["Key"] for e in entries] == [
        f"{prefix}b/deeper/three",
        f"{prefix}b/one",
        f"{prefix}b/two",
    ]
    assert [e["Value"] for e in entries] == [b"b/deeper/three", b"b/one", b"b/two"]

    _, keys = sync_client.kv.get(prefix, keys=True)
    assert keys == [f"{prefix}{k}" for k in ("a", "b/deeper/three", "b/one", "b/two", "c")]
    _, keys = sync_client.kv.get(prefix, keys=True, separator="/")
    assert keys == [f"{prefix}a", f"{prefix}b/", f"{prefix}c"]
    _, keys = sync_client.kv.get(f"{prefix}zzz", keys=True)
    assert keys is None  # 404 for a prefix with no keys


def test_raw(sync_client: consul.Consul, prefix: str, consul_addr: str) -> None:
    key = f"{prefix}raw"
    sync_client.kv.put(key, b"<b>not html</b>")
    response = requests.get(f"{consul_addr}/v1/kv/{key}?raw", timeout=5)
    assert response.status_code == 200
    assert response.content == b"<b>not html</b>"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_check_and_set(sync_client: consul.Consul, prefix: str) -> None:
    key = f"{prefix}cas"
    assert sync_client.kv.put(key, "first", cas=0) is True  # cas=0: create only
    assert sync_client.kv.put(key, "again", cas=0) is False
    _, entry = sync_client.kv.get(key)
    modify = entry["ModifyIndex"]
    assert sync_client.kv.put(key, "stale", cas=modify + 1000) is False
    assert sync_client.kv.put(key, "second", cas=modify) is True
    assert sync_client.kv.get(key)[1]["Value"] == b"second"
    assert sync_client.kv.put(f"{prefix}absent", "x", cas=5) is False


def test_delete_single_cas_and_recurse(sync_client: consul.Consul, prefix: str) -> None:
    for key in ("keep", "tree/one", "tree/two", "single"):
        sync_client.kv.put(f"{prefix}{key}", "v")
    assert sync_client.kv.delete(f"{prefix}single") is True
    assert sync_client.kv.get(f"{prefix}single")[1] is None
    assert sync_client.kv.delete(f"{prefix}single") is True  # deleting nothing is fine

    _, entry = sync_client.kv.get(f"{prefix}keep")
    assert sync_client.kv.delete(f"{prefix}keep", cas=entry["ModifyIndex"] + 1000) is False
    assert sync_client.kv.get(f"{prefix}keep")[1] is not None

    assert sync_client.kv.delete(f"{prefix}tree/", recurse=True) is True
    _, keys = sync_client.kv.get(prefix, keys=True)
    assert keys == [f"{prefix}keep"]
    assert sync_client.kv.delete(f"{prefix}keep", cas=entry["ModifyIndex"]) is True
    assert sync_client.kv.get(f"{prefix}keep")[1] is None


# -- blocking queries: KV ------------------------------------------------------------------


async def test_kv_blocking_get_returns_when_the_key_changes(
    aio_client: consul.aio.Consul, prefix: str
) -> None:
    key, other = f"{prefix}watched", f"{prefix}other"
    await aio_client.kv.put(key, "one")
    index, entry = await aio_client.kv.get(key)
    assert entry["Value"] == b"one"

    watch = asyncio.create_task(aio_client.kv.get(key, index=index, wait="10s"))
    await assert_still_blocked(watch)
    await aio_client.kv.put(other, "unrelated")  # another key: the watch stays blocked
    await assert_still_blocked(watch)

    await aio_client.kv.put(key, "two")
    new_index, entry = await asyncio.wait_for(watch, 5)
    assert entry["Value"] == b"two"
    assert int(new_index) > int(index)
    assert int(new_index) == entry["ModifyIndex"]


async def test_kv_blocking_get_on_a_missing_key_returns_when_it_appears(
    aio_client: consul.aio.Consul, prefix: str
) -> None:
    key = f"{prefix}later"
    index, entry = await aio_client.kv.get(key)
    assert entry is None
    watch = asyncio.create_task(aio_client.kv.get(key, index=index, wait="10s"))
    await assert_still_blocked(watch)
    await aio_client.kv.put(f"{prefix}unrelated", "x")
    await assert_still_blocked(watch)
    await aio_client.kv.put(key, "here")
    _, entry = await asyncio.wait_for(watch, 5)
    assert entry["Value"] == b"here"


async def test_kv_blocking_recurse_wakes_on_delete_under_prefix(
    aio_client: consul.aio.Consul, prefix: str
) -> None:
    await aio_client.kv.put(f"{prefix}faults/orders", "{}")
    await aio_client.kv.put(f"{prefix}faults/payments", "{}")
    index, entries = await aio_client.kv.get(f"{prefix}faults/", recurse=True)
    assert len(entries) == 2
    watch = asyncio.create_task(
        aio_client.kv.get(f"{prefix}faults/", recurse=True, index=index, wait="10s")
    )
    await assert_still_blocked(watch)
    await aio_client.kv.delete(f"{prefix}faults/orders")
    new_index, entries = await asyncio.wait_for(watch, 5)
    assert [e["Key"] for e in entries] == [f"{prefix}faults/payments"]
    assert int(new_index) > int(index)


async def test_kv_blocking_get_times_out_with_the_same_index(
    aio_client: consul.aio.Consul, prefix: str
) -> None:
    key = f"{prefix}quiet"
    await aio_client.kv.put(key, "still")
    index, _ = await aio_client.kv.get(key)
    started = time.monotonic()
    new_index, entry = await aio_client.kv.get(key, index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert new_index == index
    assert entry["Value"] == b"still"
    assert 0.9 <= elapsed < 3


# -- blocking queries: health and catalog ---------------------------------------------------


@pytest.fixture
def service_name(sync_client: consul.Consul) -> Iterator[str]:
    name = f"watched-{uuid.uuid4().hex[:10]}"
    sync_client.agent.service.register(name, check=consul.Check.ttl("60s"))
    sync_client.agent.check.ttl_pass(f"service:{name}")
    yield name
    sync_client.agent.service.deregister(name)


async def test_health_blocking_query_returns_on_status_change(
    aio_client: consul.aio.Consul, service_name: str, prefix: str
) -> None:
    index, nodes = await aio_client.health.service(service_name, passing=True)
    assert len(nodes) == 1
    watch = asyncio.create_task(
        aio_client.health.service(service_name, passing=True, index=index, wait="10s")
    )
    await assert_still_blocked(watch)

    # Changes elsewhere -- another service, a KV write -- do not end the watch.
    other = f"other-{uuid.uuid4().hex[:10]}"
    await aio_client.agent.service.register(other, check=consul.Check.ttl("60s"))
    try:
        await aio_client.kv.put(f"{prefix}noise", "x")
        await assert_still_blocked(watch)
    finally:
        await aio_client.agent.service.deregister(other)

    await aio_client.agent.check.ttl_warn(f"service:{service_name}")
    new_index, nodes = await asyncio.wait_for(watch, 5)
    assert int(new_index) > int(index)
    assert nodes == []  # warning is not passing


def test_health_blocking_query_times_out_with_the_same_index(
    sync_client: consul.Consul, service_name: str
) -> None:
    index, nodes = sync_client.health.service(service_name)
    started = time.monotonic()
    new_index, new_nodes = sync_client.health.service(service_name, index=index, wait="1s")
    elapsed = time.monotonic() - started
    assert new_index == index
    assert [n["Service"]["ID"] for n in new_nodes] == [n["Service"]["ID"] for n in nodes]
    assert 0.9 <= elapsed < 3


async def test_catalog_blocking_query_returns_on_new_instance(
    aio_client: consul.aio.Consul, service_name: str
) -> None:
    index, entries = await aio_client.catalog.service(service_name)
    assert len(entries) == 1
    watch = asyncio.create_task(aio_client.catalog.service(service_name, index=index, wait="10s"))
    await assert_still_blocked(watch)
    second = f"{service_name}-2"
    await aio_client.agent.service.register(service_name, service_id=second)
    try:
        new_index, entries = await asyncio.wait_for(watch, 5)
        assert int(new_index) > int(index)
        assert {e["ServiceID"] for e in entries} == {service_name, second}
    finally:
        await aio_client.agent.service.deregister(second)
