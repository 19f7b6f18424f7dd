"""SIGTERM while orders are being placed: the instance deregisters from Consul, exits 0
within its grace period, and every order it (or its twin) accepted reaches a terminal state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from shop_support import (
    DEADLINE,
    ServiceProcess,
    Shop,
    ShopClient,
    consul_instances,
    eventually,
    unique,
)

from infra.process import wait_until


async def test_sigterm_during_load_loses_no_order(
    client: ShopClient, shop: Shop, sku: str, extra_instances: list[ServiceProcess]
) -> None:
    await client.set_stock(sku, 100_000)
    twin = ServiceProcess("orders", shop.env, shop.log_dir).start()
    extra_instances.append(twin)
    twin.wait_ready()
    wait_until(
        lambda: twin.instance_id in consul_instances(shop.consul_addr),
        timeout=DEADLINE,
        what="the twin registered in Consul",
    )
    customer = unique("load")
    urls = [shop.url("orders"), twin.url]
    accepted: list[str] = []
    stop = asyncio.Event()

    async def place(worker: int) -> None:
        n = worker
        while not stop.is_set():
            try:
                answer = await client.place(
                    customer, [{"sku": sku, "quantity": 1}], orders_url=urls[n % 2]
                )
            except aiohttp.ClientError:
                answer = None  # the twin is gone: its port refuses
            if answer is not None and answer.status == 202:
                accepted.append(answer.body["id"])
            n += 1

    workers = [asyncio.create_task(place(w)) for w in range(8)]
    await eventually(
        _count(accepted), timeout=DEADLINE, what="orders flowing", until=lambda c: c >= 40
    )
    started = time.monotonic()
    code = await asyncio.to_thread(twin.stop)
    stopped_in = time.monotonic() - started
    in_flight_at_stop = len(accepted)
    await eventually(
        _count(accepted),
        timeout=DEADLINE,
        what="orders after the stop",
        until=lambda c: c >= in_flight_at_stop + 40,
    )
    stop.set()
    await asyncio.gather(*workers)

    assert code == 0
    assert stopped_in < float(shop.env["SHUTDOWN_GRACE_SECONDS"])
    assert twin.instance_id not in consul_instances(shop.consul_addr)
    assert shop.services["orders"].instance_id in consul_instances(shop.consul_addr)

    async def unfinished() -> list[str]:
        orders = {o["id"]: o["status"] for o in await client.orders_of(customer)}
        return [oid for oid in accepted if orders.get(oid) != "CONFIRMED"]

    await eventually(
        unfinished,
        timeout=2 * DEADLINE,
        what="every accepted order CONFIRMED",
        until=lambda u: not u,
    )


def _count(accepted: list[str]) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(accepted)

    return count
