"""Helpers of the shop tests: the four services as real processes, an HTTP client for them,
Kafka and Consul access, and polling with deadlines."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from infra.embedded import Endpoints
from infra.kafka.topics import consumed_by
from infra.process import ManagedProcess, free_port, wait_until

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("orders", "inventory", "payments", "notifications")
ADMIN_TOKEN = "shop-test-admin-token"
TERMINAL = ("CONFIRMED", "CANCELLED")
# How long a test waits for the saga: a few seconds are plenty on a quiet machine, CI
# machines are shared; the deadline only costs time when something is broken.
DEADLINE = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    what: str,
    until: Callable[[T], bool] = bool,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until ``until(result)``; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = await probe()
            if until(result):
                return result
            last = result
        except Exception as exc:  # not there yet
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- the services as processes ---------------------------------------------------------------


def shop_env(infra_env: Mapping[str, str], traces_dir: Path) -> dict[str, str]:
    """What every service of the test session gets: short timings so groups form, retries
    and drains happen quickly."""
    return {
        **infra_env,
        "HOST": "127.0.0.1",
        "MESH_TRACES_DIR": str(traces_dir),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "CHECK_INTERVAL": "200ms",
        "CHECK_TIMEOUT": "500ms",
        "SHUTDOWN_GRACE_SECONDS": "8",
        "CONSUMER_MAX_ATTEMPTS": "3",
        "CONSUMER_RETRY_BACKOFF": "10ms",
        "CONSUMER_RETRY_BACKOFF_MAX": "50ms",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "OUTBOX_CLAIM_IDLE": "2s",
        "PAYMENTS_LATENCY_MS": "5",
        "PAYMENTS_JITTER_MS": "2",
        "PAYMENTS_FAILURE_RATE": "0",
        # Stuck saga steps (orders and inventory re-drive) are looked for often: tests lose
        # events on purpose. What waits is re-announced after the default SAGA_REDRIVE_AFTER
        # (10 s), longer than any saga of these tests takes.
        "SAGA_REDRIVE_INTERVAL": "500ms",
        "PYTHONUNBUFFERED": "1",
    }


class ServiceProcess:
    """One instance of a shop service (``python -m services.<name>``) on a free port."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, **overrides: str):
        self.name = name
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port), **overrides}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc = ManagedProcess(
            f"{name}-{self.port}",
            [sys.executable, "-m", f"services.{name}"],
            log_path=self.log_path,
            env=self.env,
            cwd=ROOT,
        )

    @property
    def instance_id(self) -> str:
        """How the kit names the instance in Consul."""
        return f"{self.name}-127.0.0.1-{self.port}"

    def start(self) -> ServiceProcess:
        self.proc.start()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_until(
            lambda: http_get(f"{self.url}/readyz", timeout=1)[0] == 200,
            timeout=timeout,
            what=f"{self.name} ready ({self.proc.log_tail()})",
            alive=self.proc.alive,
        )

    def consuming(self) -> bool:
        """The consumer group gave this instance partitions of every topic it consumes (the
        kit publishes a lag gauge per assigned partition)."""
        lags = [
            line
            for line in self.metrics_text().splitlines()
            if line.startswith("kafka_consumer_lag{")
        ]
        return all(any(f'topic="{t}"' in line for line in lags) for t in consumed_by(self.name))

    def metrics_text(self) -> str:
        return http_get(f"{self.url}/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, timeout: float = 15.0) -> int | None:
        return self.proc.stop(timeout=timeout)


def wait_serving(services: Iterable[ServiceProcess]) -> None:
    """Every service ready, then every consumer with its partitions (a group takes a few
    seconds to form on tansu)."""
    started = list(services)
    for service in started:
        service.wait_ready()
    for service in started:
        wait_until(
            service.consuming,
            timeout=30,
            what=f"{service.name} has its partitions",
            alive=service.proc.alive,
        )


@dataclass
class Shop:
    services: dict[str, ServiceProcess]
    env: dict[str, str]
    log_dir: Path
    traces_dir: Path
    bootstrap: str
    consul_addr: str
    redis_url: str

    def url(self, service: str) -> str:
        return self.services[service].url


@contextmanager
def running_shop(infra: Endpoints, home: Path, **settings: str) -> Iterator[Shop]:
    """The four services on ``infra`` (with ``settings`` on top of :func:`shop_env`), serving,
    with their logs and traces under ``home``; stopped when the block ends."""
    env = {**shop_env(infra.env(), home / "traces"), **settings}
    services = {name: ServiceProcess(name, env, home / "logs") for name in SERVICES}
    try:
        for service in services.values():
            service.start()
        wait_serving(services.values())
        yield Shop(
            services=services,
            env=env,
            log_dir=home / "logs",
            traces_dir=home / "traces",
            bootstrap=infra.kafka_bootstrap,
            consul_addr=infra.consul_addr,
            redis_url=infra.redis_url,
        )
    finally:
        for service in services.values():
            service.stop()


# --- an HTTP client of the shop ----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


class ShopClient:
    def __init__(self, shop: Shop, session: aiohttp.ClientSession) -> None:
        self.shop = shop
        self.session = session

    async def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        async with self.session.request(
            method, url, json=json_body, data=data, headers=headers
        ) as response:
            raw = await response.read()
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            return Answer(response.status, response.headers, body)

    async def place(
        self,
        customer_id: str,
        items: list[dict[str, Any]],
        *,
        headers: Mapping[str, str] | None = None,
        orders_url: str | None = None,
    ) -> Answer:
        body = {"customer_id": customer_id, "items": items}
        url = f"{orders_url or self.shop.url('orders')}/orders"
        return await self.call("POST", url, json_body=body, headers=headers)

    async def order(self, order_id: str) -> dict[str, Any]:
        answer = await self.call("GET", f"{self.shop.url('orders')}/orders/{order_id}")
        assert answer.status == 200, answer
        return dict(answer.body)

    async def terminal(self, order_id: str, timeout: float = DEADLINE) -> dict[str, Any]:
        return await eventually(
            lambda: self.order(order_id),
            timeout=timeout,
            what=f"order {order_id} terminal",
            until=lambda order: order["status"] in TERMINAL,
        )

    async def orders_of(self, customer_id: str) -> list[dict[str, Any]]:
        """Every order of a customer, following the pages."""
        orders: list[dict[str, Any]] = []
        cursor = ""
        while True:
            query = f"customer_id={customer_id}&limit=100" + (f"&cursor={cursor}" if cursor else "")
            answer = await self.call("GET", f"{self.shop.url('orders')}/orders?{query}")
            assert answer.status == 200, answer
            orders.extend(answer.body["orders"])
            cursor = answer.body["next_cursor"]
            if not cursor:
                return orders

    async def stock(self, sku: str) -> dict[str, Any]:
        answer = await self.call("GET", f"{self.shop.url('inventory')}/stock/{sku}")
        assert answer.status == 200, answer
        return dict(answer.body)

    async def set_stock(self, sku: str, available: int) -> dict[str, Any]:
        answer = await self.call(
            "PUT",
            f"{self.shop.url('inventory')}/stock/{sku}",
            json_body={"available": available},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert answer.status == 200, answer
        return dict(answer.body)

    async def payment(self, order_id: str) -> Answer:
        return await self.call("GET", f"{self.shop.url('payments')}/payments/{order_id}")

    async def notifications(self, order_id: str) -> list[dict[str, Any]]:
        url = f"{self.shop.url('notifications')}/notifications?order_id={order_id}"
        answer = await self.call("GET", url)
        assert answer.status == 200, answer
        return list(answer.body["notifications"])


# --- Kafka ---------------------------------------------------------------------------------------


async def read_topic(bootstrap: str, topic: str, timeout: float = 1.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` so far (all partitions, from the beginning)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        ends = await eventually(
            lambda: _end_offsets(consumer, topic), timeout=5, what=f"partitions of {topic}"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for partition_records in batch.values():
                records.extend(partition_records)
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                break
    finally:
        await consumer.stop()
    return records


async def _end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[Any, int]:
    assignment = consumer.assignment()
    if not assignment:
        return {}
    return dict(await consumer.end_offsets(list(assignment)))


async def records_of(bootstrap: str, topic: str, order_id: str) -> list[ConsumerRecord]:
    return [r for r in await read_topic(bootstrap, topic) if r.key == order_id.encode()]


async def publish(
    bootstrap: str,
    topic: str,
    value: bytes,
    *,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers or [])
    finally:
        await producer.stop()


# --- traces and Consul ---------------------------------------------------------------------------


def spans_of(traces_dir: Path, trace_id: str) -> list[dict[str, Any]]:
    spans = []
    for path in traces_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if trace_id in line:
                span = json.loads(line)
                if span["trace_id"] == trace_id:
                    spans.append(span)
    return spans


# The messages of a confirmed order's saga and the groups that process them.
CONFIRMED_SAGA = {
    ("inventory", "order.created"),
    ("payments", "inventory.reserved"),
    ("orders", "payment.succeeded"),
    ("inventory", "payment.succeeded"),
    ("notifications", "order.confirmed"),
}


async def whole_trace(traces_dir: Path, trace_id: str, caller_span: str) -> list[dict[str, Any]]:
    """The spans of a confirmed order's trace (begun by the caller's span ``caller_span``)
    once all of it is exported, else []: each service exports in batches of its own, so wait
    until every saga message was processed and no span misses its parent."""
    spans = spans_of(traces_dir, trace_id)
    processed = {
        (s["service"], s["attributes"]["messaging.destination.name"])
        for s in spans
        if s["kind"] == "CONSUMER"
    }
    ids = {s["span_id"] for s in spans} | {caller_span}
    complete = all(s["parent_span_id"] in ids for s in spans)
    return spans if processed >= CONFIRMED_SAGA and complete else []


def consul_instances(consul_addr: str) -> set[str]:
    """Ids of the services registered with the agent."""
    status, text = http_get(f"{consul_addr}/v1/agent/services")
    assert status == 200, text
    return set(json.loads(text))
