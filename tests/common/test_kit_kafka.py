"""The Kafka side of the kit on tansu and Redis, with the sample service as a real process:
envelope and trace headers, idempotency, the DLQ, commits after effects, the outbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from kit_support import Sample, consul_sync, create_topics, eventually, publish, read_topic, unique

from infra.embedded.parts import tansu_binary
from infra.embedded.persistence import TANSU_STORAGE_ENV
from infra.embedded.probes import kafka_answers
from infra.process import ManagedProcess, free_port
from services.common.kafka.consumer import ConsumerRunner, HandlerContext
from services.common.kafka.envelope import Envelope, make_event
from services.common.kafka.outbox import Outbox, outbox_key
from services.common.kafka.producer import EventProducer
from services.common.metrics import Metrics
from services.common.redis import create_redis
from services.common.settings import ServiceSettings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_event_round_trip_with_envelope_key_and_traceparent(
    shared_sample: Sample, kafka_bootstrap: str
) -> None:
    sample = shared_sample
    status, _, body = sample.request(
        "POST", "/items", {"name": "a", "quantity": 1}, headers={"traceparent": TRACEPARENT}
    )
    assert status == 202
    records = await eventually(
        lambda: _records_of(kafka_bootstrap, sample.topic, body["id"]),
        timeout=10,
        what="the event in Kafka",
    )
    [record] = records
    event = Envelope.from_json(record.value)
    assert (event.type, event.order_id, event.version) == ("item.created", body["id"], 1)
    assert event.data == {"name": "a", "quantity": 1}
    raw = json.loads(record.value)
    assert set(raw) == {"id", "type", "version", "occurred_at", "order_id", "data"}
    assert raw["occurred_at"].endswith("Z")
    assert record.key == body["id"].encode()
    headers = dict(record.headers)
    version, trace_id, span_id, flags = headers["traceparent"].decode().split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != "00f067aa0ba902b7"  # the send span's, a descendant of the caller's


async def _records_of(bootstrap: str, topic: str, key: str) -> list[Any]:
    records = await read_topic(bootstrap, topic, 10_000, timeout=0.5)
    return [r for r in records if r.key == key.encode()]


async def test_same_event_twice_has_one_effect(
    shared_sample: Sample, kafka_bootstrap: str, redis_client: aioredis.Redis
) -> None:
    sample = shared_sample
    duplicates = sample.metric("kafka_messages_consumed_total", outcome="duplicate")
    event = make_event("item.created", unique("order"), {"n": 1})
    await publish(kafka_bootstrap, sample.topic, [event.to_json().encode()] * 2, key=b"dup")
    await eventually(
        lambda: _metric_async(sample, "kafka_messages_consumed_total", outcome="duplicate"),
        timeout=10,
        what="the duplicate is seen",
        until=lambda value: value == duplicates + 1,
    )
    assert await redis_client.hget(f"{sample.ns}:handled", str(event.id)) == "1"


async def _metric_async(sample: Sample, name: str, **labels: str) -> float:
    return sample.metric(name, **labels)


async def test_poison_goes_to_dlq_after_n_attempts_and_the_next_is_handled(
    shared_sample: Sample, kafka_bootstrap: str, redis_client: aioredis.Redis
) -> None:
    sample = shared_sample
    dlq = f"{sample.topic}.dlq"
    errors_before = sample.metric("kafka_handler_errors_total", topic=sample.topic)
    order_id = unique("order")
    poison = make_event("item.created", order_id, {"poison": True})
    good = make_event("item.created", order_id, {"n": 2})
    not_json = b"{definitely not an envelope"
    values = [poison.to_json().encode(), not_json, good.to_json().encode()]
    await publish(kafka_bootstrap, sample.topic, values, key=order_id.encode())

    await eventually(
        lambda: _has(redis_client, sample, str(good.id)), timeout=10, what="next event handled"
    )
    dead = [json.loads(r.value) for r in await _records_of(kafka_bootstrap, dlq, order_id)]
    assert len(dead) == 2
    by_attempts = {d["attempts"]: d for d in dead}
    pill = by_attempts[3]  # CONSUMER_MAX_ATTEMPTS
    assert pill["original"]["id"] == str(poison.id)
    assert pill["error"] == {"type": "ValueError", "message": "poison pill"}
    assert (pill["topic"], pill["group"]) == (sample.topic, sample.name)
    assert {"partition", "offset", "failed_at"} <= set(pill)
    garbage = by_attempts[1]  # an invalid envelope cannot improve with retries
    assert garbage["error"]["type"] == "PermanentError"
    assert garbage["original"] == not_json.decode()
    assert sample.metric("kafka_handler_errors_total", topic=sample.topic) == errors_before + 3
    assert sample.metric("kafka_dlq_messages_total", topic=sample.topic) >= 2
    assert await redis_client.hget(f"{sample.ns}:handled", str(good.id)) == "1"
    assert not await redis_client.hexists(f"{sample.ns}:handled", str(poison.id))


async def _has(redis: aioredis.Redis, sample: Sample, event_id: str) -> bool:
    return bool(await redis.hexists(f"{sample.ns}:handled", event_id))


async def _count(redis: aioredis.Redis, sample: Sample, at_least: int) -> bool:
    return int(await redis.hlen(f"{sample.ns}:handled")) >= at_least


async def test_sigterm_commits_the_batch_and_kill_9_loses_nothing(
    samples: Callable[..., Sample],
    kit_topic: str,
    kafka_bootstrap: str,
    consul_addr: str,
    redis_client: aioredis.Redis,
) -> None:
    """Three instances of one service in turn on one topic. The first gets SIGTERM mid-way:
    it deregisters, finishes its batch and commits (the second sees no duplicate) and exits
    within the grace period. The second is killed with SIGKILL mid-batch: the third handles
    the rest, repeats no effect and loses nothing."""
    env = {"SAMPLE_TOPIC": kit_topic, "CONSUMER_BATCH_SIZE": "10"}
    # One key: handled one after another, 20 ms each, so each stop lands mid-way.
    events = [make_event("item.created", "order-k", {"slow_ms": 20}) for _ in range(60)]
    first = samples(**env).start()
    await publish(kafka_bootstrap, kit_topic, [e.to_json().encode() for e in events], key=b"k")
    await eventually(lambda: _count(redis_client, first, 5), timeout=10, what="handling began")
    registry = consul_sync(consul_addr)
    assert first.instance_id in registry.agent.services()
    stopping = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - stopping < float(first.env["SHUTDOWN_GRACE_SECONDS"])
    assert first.instance_id not in registry.agent.services()
    done_by_first = int(await redis_client.hlen(f"{first.ns}:handled"))
    assert done_by_first >= 10 and done_by_first % 10 == 0  # the batch in progress finished

    second = samples(**{**env, "SAMPLE_NS": first.ns, "SERVICE_NAME": first.name}).start()
    await eventually(
        lambda: _count(redis_client, second, done_by_first + 15), timeout=15, what="resumed"
    )
    assert second.metric("kafka_messages_consumed_total", outcome="duplicate") == 0
    os.killpg(second.proc.pid, signal.SIGKILL)
    second.proc.popen.wait()  # type: ignore[union-attr]

    third = samples(**{**env, "SAMPLE_NS": first.ns, "SERVICE_NAME": first.name}).start()
    await eventually(
        lambda: _count(redis_client, third, len(events)), timeout=20, what="all events handled"
    )
    handled = await redis_client.hgetall(f"{first.ns}:handled")
    assert handled == {str(e.id): "1" for e in events}
    order = await redis_client.lrange(f"{first.ns}:order", 0, -1)
    assert order == [str(e.id) for e in events]  # one key: in order, each once


async def test_outbox_relay_recreates_its_group_after_redis_lost_it(
    shared_sample: Sample, kafka_bootstrap: str, redis_client: aioredis.Redis
) -> None:
    """A Redis that comes back empty (no persistence) has no outbox stream and no relay
    group: the relay creates them again instead of failing with NOGROUP forever."""
    sample = shared_sample
    key = outbox_key(sample.name)
    assert await redis_client.delete(key) == 1  # the stream, and its consumer group with it
    status, _, body = sample.request("POST", "/items", {"name": "after", "quantity": 1})
    assert status == 202
    await eventually(
        lambda: _records_of(kafka_bootstrap, sample.topic, body["id"]),
        timeout=15,
        what="the event relayed after the outbox group was lost",
    )


async def test_outbox_holds_events_until_the_broker_is_reachable(
    samples: Callable[..., Sample], redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    sample = samples(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SAMPLE_TOPIC="outbox.test",
        SAMPLE_CONSUME="false",
        KAFKA_REQUEST_TIMEOUT_MS="1000",
    ).start()
    sample.ready()  # Kafka is reported but not required: orders are still accepted
    ids = []
    for n in range(20):
        status, _, body = sample.request("POST", "/items", {"name": f"i{n}", "quantity": 1})
        assert status == 202
        ids.append(body["id"])
    key = outbox_key(sample.name)
    assert await redis_client.xlen(key) == 20
    _, _, ready = sample.request("GET", "/readyz")
    assert ready["checks"]["kafka"] == "unreachable"

    broker = ManagedProcess(
        "tansu-late",
        [
            _tansu(),
            "broker",
            "--listener-url",
            f"tcp://{bootstrap}",
            "--advertised-listener-url",
            f"tcp://{bootstrap}",
        ],
        log_path=tmp_path / "tansu.log",
    )
    broker.start()
    try:
        await eventually(lambda: _create(bootstrap), timeout=10, what="late broker topics")
        await eventually(
            lambda: _zero(redis_client, key), timeout=20, what="outbox drained after broker start"
        )
        records = await read_topic(bootstrap, "outbox.test", 20)
        assert sorted(Envelope.from_json(r.value).order_id for r in records) == sorted(ids)
    finally:
        sample.stop()
        broker.stop()


async def _create(bootstrap: str) -> bool:
    await create_topics(bootstrap, "outbox.test")
    return True


async def _zero(redis: aioredis.Redis, key: str) -> bool:
    return await redis.xlen(key) == 0


def _tansu() -> str:
    return tansu_binary(os.environ)[0]


class _Broker:
    """A tansu of the test's own with memory storage, restartable on the same port: a restart
    loses every topic's log and the committed offsets, as a broker without persistence does."""

    def __init__(self, home: Path) -> None:
        self.bootstrap = f"127.0.0.1:{free_port()}"
        self.home = home
        self.proc: ManagedProcess | None = None
        self.starts = 0

    async def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.starts += 1
        self.proc = ManagedProcess(
            f"tansu-{self.starts}",
            [_tansu(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            log_path=self.home / f"tansu-{self.starts}.log",
            env={TANSU_STORAGE_ENV: "memory://tansu/"},
        )
        self.proc.start()
        await eventually(
            lambda: asyncio.to_thread(kafka_answers, self.bootstrap),
            timeout=20,
            what="tansu answers",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=5)


@dataclass
class _Restartable:
    broker: _Broker
    topic: str
    name: str
    runner: ConsumerRunner
    handled: list[str] = field(default_factory=list)


@asynccontextmanager
async def _restartable(tmp_path: Path, redis_url: str, prefix: str) -> AsyncIterator[_Restartable]:
    """The test's own broker, started, with a one-partition topic, and a consumer runner of
    it (not started) with short group timeouts that records the ids of the events it handles."""
    broker = _Broker(tmp_path)
    topic = unique("kit").replace("-", ".")
    name = unique(prefix)
    handled: list[str] = []

    async def on_event(event: Envelope, ctx: HandlerContext) -> None:
        handled.append(str(event.id))

    settings = ServiceSettings(  # type: ignore[call-arg]
        SERVICE_NAME=name,
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        REDIS_URL=redis_url,
        CONSUL_HTTP_ADDR="",
        KAFKA_SESSION_TIMEOUT_MS=3000,
        KAFKA_HEARTBEAT_INTERVAL_MS=300,
        KAFKA_REQUEST_TIMEOUT_MS=2000,
    )
    metrics = Metrics(name, "v1")
    redis = create_redis(redis_url)
    producer = EventProducer(settings, metrics)
    runner = ConsumerRunner(
        settings,
        {topic: on_event},
        redis=redis,
        producer=producer,
        outbox=Outbox(name),
        metrics=metrics,
    )
    try:
        await broker.start()
        await create_topics(broker.bootstrap, topic, f"{topic}.dlq", partitions=1)
        yield _Restartable(broker, topic, name, runner, handled)
    finally:
        await runner.stop()
        await producer.stop()
        await redis.aclose()
        broker.stop()


async def test_consumer_reads_again_from_the_start_after_the_broker_lost_its_log(
    redis_url: str, tmp_path: Path
) -> None:
    """A broker without persistent storage restarts with empty logs and no groups. tansu
    answers a fetch beyond the new log's end with no records and no error, so a consumer
    that kept its old position would skip everything until the new log reached it; the
    runner must instead read the new log from its start (today the group rejoin does that:
    no committed offset, so ``earliest``)."""
    async with _restartable(tmp_path, redis_url, "reset") as setup:
        broker, topic = setup.broker, setup.topic
        setup.runner.start()
        before = [make_event("item.created", f"o-{n}", {}) for n in range(40)]
        await publish(broker.bootstrap, topic, [e.to_json().encode() for e in before])
        await eventually(
            lambda: _handled(setup.handled, before), timeout=30, what="the first events handled"
        )

        broker.stop()
        await broker.start()
        await create_topics(broker.bootstrap, topic, f"{topic}.dlq", partitions=1)
        after = [make_event("item.created", f"p-{n}", {}) for n in range(3)]
        await publish(broker.bootstrap, topic, [e.to_json().encode() for e in after])
        await eventually(
            lambda: _handled(setup.handled, after),
            timeout=45,
            what="the events produced after the broker restart handled",
        )


async def _handled(handled: list[str], events: list[Envelope]) -> bool:
    return {str(e.id) for e in events} <= set(handled)


async def test_a_stale_commit_past_the_new_logs_end_is_reset_as_kafka_would(
    redis_url: str, tmp_path: Path
) -> None:
    """CI saw a compose broker-restart lose 6 orders this way: a batch handled while tansu
    was down committed its offsets once it was back, with no generation (the member had just
    been told to rejoin). tansu takes a commit past the end of its new, empty log (checked
    here first), and the group then reads from there: nothing the new log holds is read until
    it grows past that offset. The runner must reset as Kafka's OFFSET_OUT_OF_RANGE would."""
    async with _restartable(tmp_path, redis_url, "stale") as setup:
        broker = setup.broker
        partition = TopicPartition(setup.topic, 0)
        # The commit the race makes: no generation, past the end of the (new) log.
        committer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=setup.name, enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign([partition])
            await committer.commit({partition: 40})
            assert await committer.committed(partition) == 40, "tansu refused the commit"
        finally:
            await committer.stop()
        events = [make_event("item.created", f"q-{n}", {}) for n in range(3)]
        await publish(broker.bootstrap, setup.topic, [e.to_json().encode() for e in events])

        setup.runner.start()
        await eventually(
            lambda: _handled(setup.handled, events),
            timeout=30,
            what="the events of a log shorter than the committed offset handled",
        )
