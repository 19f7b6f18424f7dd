"""BlockingWatch against the real registry: the helper the gateway reuses for routing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kit_support import consul_sync, eventually, unique

from services.common.consul import consul_client, watch_kv, watch_service


async def test_watch_service_follows_health_changes_and_stops_mid_poll(consul_addr: str) -> None:
    name = unique("watched")
    registry = consul_sync(consul_addr)
    client = consul_client(consul_addr)
    watch = watch_service(client, name, wait=30)
    seen: list[list[Any]] = []

    async def record(nodes: list[Any]) -> None:
        seen.append(nodes)

    task = asyncio.create_task(watch.run(record))
    try:
        await eventually(_first(seen), timeout=5, what="first answer")
        assert seen[-1] == []
        registry.agent.service.register(
            name, service_id=f"{name}-1", port=1, check={"ttl": "30s", "status": "critical"}
        )
        registry.agent.check.ttl_pass(f"service:{name}-1")
        changed = time.monotonic()
        await eventually(_ids(seen, [f"{name}-1"]), timeout=1, what="healthy instance seen")
        assert time.monotonic() - changed < 1
        registry.agent.service.deregister(f"{name}-1")
        await eventually(_ids(seen, []), timeout=1, what="instance gone")
        # Now the watch sits in a 30 s long poll: stopping must not wait for it.
        stopping = time.monotonic()
        watch.stop()
        await asyncio.wait_for(task, timeout=2)
        assert time.monotonic() - stopping < 1
    finally:
        watch.stop()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_watch_kv_yields_changes_only(consul_addr: str) -> None:
    key = f"mesh/test/{unique('key')}"
    registry = consul_sync(consul_addr)
    client = consul_client(consul_addr)
    watch = watch_kv(client, key, wait=30)
    values: list[bytes | None] = []
    iterator = aiter(watch)
    try:
        values.append(await asyncio.wait_for(anext(iterator), 5))
        registry.kv.put(key, "one")
        values.append(await asyncio.wait_for(anext(iterator), 1))
        registry.kv.put(key, "one")  # same value: not a change
        registry.kv.put(key, "two")
        values.append(await asyncio.wait_for(anext(iterator), 1))
        registry.kv.delete(key)
        values.append(await asyncio.wait_for(anext(iterator), 1))
        assert values == [None, b"one", b"two", None]
    finally:
        watch.stop()
        await client.close()


def _first(seen: list[Any]) -> Any:
    async def probe() -> bool:
        return bool(seen)

    return probe


def _ids(seen: list[list[Any]], expected: list[str]) -> Any:
    async def probe() -> bool:
        return bool(seen) and [n["Service"]["ID"] for n in seen[-1]] == expected

    return probe
