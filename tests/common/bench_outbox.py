"""Throughput of the kit's event path on this machine: prints figures, asserts nothing.

    .venv/bin/python tests/common/bench_outbox.py [--events 20000] [--trace]

Starts its own tansu and valkey on free loopback ports and measures, in one process:
the bare producer, a request storing then publishing directly, outbox writes (the state change
and the event in one MULTI), the relay draining a backlog, writes and relay together, the
latency of one saga hop at a steady rate, and the consumer runner (dedupe + effects + commit
per batch). ``--trace`` installs the tracer provider (ratio 1, JSON lines in a temp dir)
to show what tracing costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from infra.embedded.parts import redis_binary, tansu_binary
from infra.process import ManagedProcess, free_port, tcp_answers, wait_until
from services.common.kafka.consumer import ConsumerRunner, HandlerContext
from services.common.kafka.envelope import Envelope, make_event
from services.common.kafka.outbox import Outbox, OutboxRelay, outbox_key
from services.common.kafka.producer import EventProducer
from services.common.metrics import Metrics
from services.common.redis import create_redis
from services.common.settings import ServiceSettings
from services.common.tracing import setup_tracing


def _start(tmp: Path) -> tuple[list[ManagedProcess], str, str]:
    kafka_port, redis_port = free_port(), free_port()
    tansu = ManagedProcess(
        "tansu",
        [
            tansu_binary(os.environ)[0],
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{kafka_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{kafka_port}",
        ],
        log_path=tmp / "tansu.log",
    )
    valkey = ManagedProcess(
        "valkey",
        [
            redis_binary(os.environ)[0],
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ],
        log_path=tmp / "valkey.log",
    )
    for part, port in ((tansu, kafka_port), (valkey, redis_port)):
        part.start()
        wait_until(partial(tcp_answers, "127.0.0.1", port), timeout=10, what=part.name)
    return [tansu, valkey], f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0"


def _report(label: str, count: int, seconds: float) -> None:
    print(f"{label:<44} {count:>7} in {seconds:6.2f}s = {count / seconds:>9,.0f}/s")


async def _until_published(redis: Redis) -> None:
    while True:
        if not await redis.xlen(outbox_key("bench")):
            return
        await asyncio.sleep(0.01)


async def bench(events: int, bootstrap: str, redis_url: str) -> None:
    settings = ServiceSettings(  # type: ignore[call-arg]
        SERVICE_NAME="bench",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        REDIS_URL=redis_url,
        CONSUL_HTTP_ADDR="",
        KAFKA_SESSION_TIMEOUT_MS=3000,
        KAFKA_HEARTBEAT_INTERVAL_MS=300,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(name, 3, 1) for name in ("bench.events", "bench.hop")]
        + [NewTopic(f"{name}.dlq", 1, 1) for name in ("bench.events", "bench.hop")]
    )
    await admin.close()

    metrics = Metrics("bench", "v1")
    redis = create_redis(redis_url)
    producer = EventProducer(settings, metrics)
    outbox = Outbox("bench")
    payload = {"customer_id": "c-1", "items": [{"sku": "SKU-001", "quantity": 2}], "total": 20}

    started = time.perf_counter()
    futures = [
        await producer.enqueue(
            "bench.events",
            make_event("x", f"o-{n}", payload).to_json().encode(),
            key=f"o-{n}",
            message_id=str(n),
        )
        for n in range(events)
    ]
    await asyncio.gather(*futures)
    _report("producer alone (enqueue + ack)", events, time.perf_counter() - started)

    async def write(n: int) -> None:
        event = make_event("order.created", f"o-{n}", payload)
        async with redis.pipeline(transaction=True) as tx:
            tx.hset(f"bench:order:{n}", mapping={"status": "PENDING", "total": 20})
            outbox.stage(tx, "bench.events", event)
            await tx.execute()

    async def send_directly(n: int) -> None:
        # What a request would do without the outbox: store, then publish and await the ack.
        await redis.hset(f"bench:order:{n}", mapping={"status": "PENDING", "total": 20})
        await producer.send("bench.events", make_event("order.created", f"o-{n}", payload))

    async def writers(count: int, one: Callable[[int], Awaitable[None]] = write) -> None:
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                await one(n)

        await asyncio.gather(*(worker() for _ in range(50)))

    started = time.perf_counter()
    await writers(events, send_directly)
    _report("no outbox: HSET, then send + ack, 50 conc.", events, time.perf_counter() - started)

    started = time.perf_counter()
    await writers(events)
    _report("outbox writes (MULTI: HSET + XADD), 50 conc.", events, time.perf_counter() - started)

    relay = OutboxRelay(redis, producer, metrics, service="bench", consumer="bench-1")
    started = time.perf_counter()
    relay.start()
    await _until_published(redis)
    _report("relay draining a backlog", events, time.perf_counter() - started)

    started = time.perf_counter()
    await writers(events)
    written = time.perf_counter() - started
    await _until_published(redis)
    _report("writes with the relay running", events, written)
    _report("  ... until all published", events, time.perf_counter() - started)

    await _hop_latency(settings, redis, producer, metrics, outbox, rate=500, seconds=4)
    await relay.stop(flush_timeout=5)

    handled = 0
    first_at = 0.0
    done = asyncio.Event()

    async def handler(event: Envelope, ctx: HandlerContext) -> None:
        nonlocal handled, first_at
        ctx.tx.hset(f"bench:order:{event.order_id}", "status", "CONFIRMED")
        handled += 1
        if handled == 1:
            first_at = time.perf_counter()
        if handled >= events * 4:
            done.set()

    runner = ConsumerRunner(
        settings,
        {"bench.events": handler},
        redis=redis,
        producer=producer,
        outbox=outbox,
        metrics=metrics,
    )
    runner.start()
    await asyncio.wait_for(done.wait(), timeout=300)
    _report(
        "consumer runner (dedupe + effects + commit)", handled - 1, time.perf_counter() - first_at
    )
    await runner.stop()
    await producer.stop()
    await redis.aclose()


async def _hop_latency(
    settings: ServiceSettings,
    redis: Redis,
    producer: EventProducer,
    metrics: Metrics,
    outbox: Outbox,
    *,
    rate: int,
    seconds: int,
) -> None:
    """One saga hop at a steady rate: outbox write -> relay -> Kafka -> consumer runner."""
    count = rate * seconds
    latencies: list[float] = []
    ready, all_seen = asyncio.Event(), asyncio.Event()

    async def handler(event: Envelope, ctx: HandlerContext) -> None:
        if event.type == "warm-up":
            ready.set()
            return
        latencies.append((datetime.now(UTC) - event.occurred_at).total_seconds())
        if len(latencies) >= count:
            all_seen.set()

    runner = ConsumerRunner(
        settings,
        {"bench.hop": handler},
        redis=redis,
        producer=producer,
        outbox=outbox,
        metrics=metrics,
        group_id="bench-hop",
    )
    runner.start()
    await outbox.publish(redis, "bench.hop", make_event("warm-up", "o-0"))
    await asyncio.wait_for(ready.wait(), timeout=30)
    started = time.perf_counter()
    for n in range(count):
        async with redis.pipeline(transaction=True) as tx:
            tx.hset(f"bench:hop:{n}", "status", "PENDING")
            outbox.stage(tx, "bench.hop", make_event("order.created", f"o-{n}"))
            await tx.execute()
        await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
    await asyncio.wait_for(all_seen.wait(), timeout=60)
    await runner.stop()
    latencies.sort()
    p50, p95, p99 = (latencies[int(len(latencies) * q)] * 1000 for q in (0.5, 0.95, 0.99))
    print(
        f"one hop at {rate}/s (write -> relay -> consumer)  "
        f"p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parts, bootstrap, redis_url = _start(Path(tmp))
        try:
            if args.trace:
                setup_tracing(
                    ServiceSettings(  # type: ignore[call-arg]
                        SERVICE_NAME="bench", MESH_TRACES_DIR=Path(tmp) / "traces"
                    )
                )
            asyncio.run(bench(args.events, bootstrap, redis_url))
        finally:
            for part in parts:
                part.stop()


if __name__ == "__main__":
    main()
