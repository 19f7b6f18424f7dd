"""Notifications: one per terminal order, listed by order or customer, and streamed as
Server-Sent Events from any instance (through Redis), resumable, ended cleanly at shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from shop_support import DEADLINE, ServiceProcess, Shop, ShopClient, eventually, unique

from infra.process import free_port


class SseReader:
    """Reads frames of an open SSE response: ``(fields, comments)`` per blank-line block."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def frame(self, timeout: float = DEADLINE) -> tuple[dict[str, str], list[str]]:
        fields: dict[str, str] = {}
        comments: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if not line:
                if fields or comments:
                    return fields, comments
                continue
            if line.startswith(":"):
                comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    async def event(self, timeout: float = DEADLINE) -> dict[str, str]:
        """The next frame that carries an event (skipping heartbeats and ``retry``)."""
        while True:
            fields, _ = await self.frame(timeout)
            if "data" in fields:
                return fields


async def test_notifications_are_listed_by_customer(client: ShopClient, sku: str) -> None:
    await client.set_stock(sku, 1)
    customer = unique("c")
    first = await client.place(customer, [{"sku": sku, "quantity": 1}])
    await client.terminal(first.body["id"])
    second = await client.place(customer, [{"sku": sku, "quantity": 1}])  # out of stock
    await client.terminal(second.body["id"])
    url = f"{client.shop.url('notifications')}/notifications?customer_id={customer}"

    async def listed() -> list[dict[str, Any]]:
        return list((await client.call("GET", url)).body["notifications"])

    found = await eventually(
        listed, timeout=DEADLINE, what="two notifications", until=lambda n: len(n) == 2
    )
    kinds = {n["order_id"]: n["kind"] for n in found}
    assert kinds == {first.body["id"]: "order.confirmed", second.body["id"]: "order.cancelled"}


async def test_stream_from_another_instance_resumes_and_ends_at_shutdown(
    client: ShopClient, shop: Shop, sku: str, extra_instances: list[ServiceProcess]
) -> None:
    # A second notifications instance that cannot reach Kafka: it consumes nothing, so what
    # its clients see was recorded by the session's instance and reached it through Redis.
    viewer = ServiceProcess(
        "notifications",
        shop.env,
        shop.log_dir,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_REQUEST_TIMEOUT_MS="500",
        NOTIFICATIONS_HEARTBEAT="300ms",
    ).start()
    extra_instances.append(viewer)
    viewer.wait_ready()
    await client.set_stock(sku, 10)
    customer = unique("c")
    stream_url = f"{viewer.url}/notifications/stream?customer_id={customer}"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)

    async with client.session.get(stream_url, timeout=timeout) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Request-Id"]
        reader = SseReader(response)
        fields, _ = await reader.frame()
        assert fields == {"retry": "2000"}
        _, comments = await reader.frame()  # nothing happens for a while: a heartbeat
        assert comments == ["keep-alive"]

        first = await client.place(customer, [{"sku": sku, "quantity": 1}])
        other = await client.place(unique("c"), [{"sku": sku, "quantity": 1}])  # filtered out
        event = await reader.event()
        notification = json.loads(event["data"])
        assert event["event"] == "order.confirmed"
        assert (notification["order_id"], notification["customer_id"]) == (
            first.body["id"],
            customer,
        )
        seen_id = event["id"]
    await client.terminal(other.body["id"])

    # Missed while disconnected: replayed from Last-Event-ID, then live again.
    missed = await client.place(customer, [{"sku": sku, "quantity": 1}])
    await client.terminal(missed.body["id"])
    await eventually(
        lambda: client.notifications(missed.body["id"]), timeout=DEADLINE, what="missed"
    )
    async with client.session.get(
        stream_url, timeout=timeout, headers={"Last-Event-ID": seen_id}
    ) as response:
        reader = SseReader(response)
        replayed = await reader.event()
        assert json.loads(replayed["data"])["order_id"] == missed.body["id"]

        # SIGTERM ends the open stream at once (no waiting out the grace period).
        stopping = asyncio.create_task(asyncio.to_thread(viewer.stop))
        try:
            while True:
                await reader.frame(timeout=10)
        except EOFError:
            pass
        assert await stopping == 0
