"""The embedded Kafka (tansu) and Redis answer real clients."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka.topics import TOPICS, all_topics
from infra.process import async_wait_until


async def test_declared_topics_exist_with_their_partitions(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        wanted = all_topics()
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    assert partitions == wanted
    assert all(t.dlq in wanted for t in TOPICS if t.consumers)  # a DLQ for what is consumed


async def test_consumer_group_of_two_shares_partitions_and_keeps_headers(
    kafka_bootstrap: str,
) -> None:
    topic = f"test.group.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # Short heartbeats and session make members notice a rebalance quickly.
            heartbeat_interval_ms=300,
            session_timeout_ms=6000,
        )
        for _ in range(2)
    ]
    received: list[list[tuple[bytes, tuple[tuple[str, bytes], ...]]]] = [[], []]
    stop = asyncio.Event()

    async def drain(index: int) -> None:
        consumer = consumers[index]
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                received[index].extend((r.value or b"", tuple(r.headers)) for r in records)
            if batch:
                await consumer.commit()

    for consumer in consumers:
        await consumer.start()
    tasks = [asyncio.create_task(drain(i)) for i in range(2)]
    try:

        def balanced() -> bool:
            a, b = (c.assignment() for c in consumers)
            return bool(a) and bool(b) and not (a & b) and len(a | b) == 3

        await async_wait_until(balanced, timeout=30, what="both consumers hold partitions")

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for i in range(60):
                await producer.send(
                    topic,
                    f"m{i}".encode(),
                    key=f"order-{i}".encode(),
                    headers=[("traceparent", f"00-{i:032x}-{i:016x}-01".encode())],
                )
            await producer.flush()
        finally:
            await producer.stop()

        await async_wait_until(
            lambda: len(received[0]) + len(received[1]) >= 60, timeout=20, what="60 messages"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()

    values = sorted(v for part in received for v, _ in part)
    assert values == sorted(f"m{i}".encode() for i in range(60))  # each exactly once
    assert received[0] and received[1], "both consumers of the group got messages"
    for value, headers in (m for part in received for m in part):
        i = int(value[1:])
        assert headers == (("traceparent", f"00-{i:032x}-{i:016x}-01".encode()),)
    assert all(isinstance(tp, TopicPartition) for tp in consumers[0].assignment() or set())


async def test_redis_round_trip(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    try:
        assert await client.set(key, "v", ex=30)
        assert await client.get(key) == b"v"
        assert await client.incr(key + ":n") == 1
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(key + ":n").expire(key + ":n", 30)
            assert (await pipe.execute())[0] == 2
    finally:
        await client.delete(key, key + ":n")
        await client.aclose()
