"""The transactional outbox: events are stored with the state change, then relayed to Kafka.

A handler or route queues its writes and its outgoing events in ONE Redis transaction
(``MULTI``/``EXEC``): the events go to a stream, ``mesh:outbox:<service>``. The relay reads
that stream through a consumer group, publishes to Kafka, and deletes an entry only after the
broker acknowledged it. While the broker is away entries wait in Redis; nothing accepted is
lost, and a relay that dies leaves its unacknowledged entries to be claimed by another one.

Why a stream and a consumer group: ``XREADGROUP ... BLOCK`` wakes the relay the moment an
entry is added (from any replica, no polling), each entry goes to one relay, and the pending
entries list is the crash-recovery record that ``XAUTOCLAIM`` hands over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from services.common.backoff import Backoff, sleep_unless
from services.common.kafka.envelope import Envelope
from services.common.kafka.producer import BrokerUnavailable, EventProducer
from services.common.metrics import Metrics
from services.common.redis import REDIS_UNAVAILABLE
from services.common.tracing import context_from_carrier, current_carrier

log = logging.getLogger(__name__)

GROUP = "relay"


def outbox_key(service: str) -> str:
    return f"mesh:outbox:{service}"


class Outbox:
    """The write side: queue events into the caller's Redis transaction."""

    def __init__(self, service: str) -> None:
        self.key = outbox_key(service)

    def fields(self, topic: str, event: Envelope) -> dict[str, str]:
        """The stream entry for ``event``: also what a Lua script gets to ``XADD`` itself
        when the choice of event depends on what the script finds."""
        entry = {
            "topic": topic,
            "key": event.order_id,
            "id": str(event.id),
            "value": event.to_json(),
        }
        # The trace context of the code that emitted the event: the relay's "send" span
        # becomes its child, so the trace continues through the outbox.
        entry.update(current_carrier())
        return entry

    def stage(self, tx: Pipeline, topic: str, event: Envelope) -> None:
        """Queue the event in ``tx`` (a ``pipeline(transaction=True)``); it is stored
        exactly when the rest of ``tx`` is."""
        tx.xadd(self.key, self.fields(topic, event))  # type: ignore[arg-type]

    async def publish(self, redis: aioredis.Redis, topic: str, event: Envelope) -> None:
        """Emit an event that goes with no state change."""
        await redis.xadd(self.key, self.fields(topic, event))  # type: ignore[arg-type]


class OutboxRelay:
    """Publishes outbox entries to Kafka; one per process, any number per service."""

    def __init__(
        self,
        redis: aioredis.Redis,
        producer: EventProducer,
        metrics: Metrics,
        *,
        service: str,
        consumer: str,
        batch_size: int = 500,
        claim_idle: float = 60.0,
        block_ms: int = 250,
    ) -> None:
        self._redis = redis
        self._producer = producer
        self._metrics = metrics
        self.key = outbox_key(service)
        self._consumer = consumer
        self._batch_size = batch_size
        self._claim_idle = claim_idle
        self._block_ms = block_ms
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(base=0.1, cap=2.0)
        self._group_ready = False
        # After a failed publish our own pending list is retried before anything new.
        self._own_pending = True
        self._next_claim = 0.0
        self._next_report = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, flush_timeout: float) -> None:
        """Publish what is pending (up to ``flush_timeout``), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), flush_timeout)
        except TimeoutError:
            log.warning("outbox relay not flushed in %.1fs; entries stay in Redis", flush_timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                published = await self.relay_once(block=not self._stopping.is_set())
            except (BrokerUnavailable, KafkaError, RedisError, *REDIS_UNAVAILABLE) as exc:
                self._own_pending = True
                if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
                    # Redis lost the stream and its group (it restarted without its data):
                    # both are created again on the next try, or nothing is relayed again.
                    self._group_ready = False
                if self._stopping.is_set():
                    # They stay in Redis for the next relay (or this one after a restart).
                    log.warning("outbox relay stopping with events unpublished: %s", exc)
                    return
                delay = self._backoff.next()
                log.warning("outbox relay: %s; retrying in %.2fs", exc, delay)
                await sleep_unless(self._stopping, delay)
                continue
            self._backoff.reset()
            if published == 0 and self._stopping.is_set():
                return

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the stream: every entry in it is unpublished.
            await self._redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def relay_once(self, *, block: bool) -> int:
        """Publish one batch; return how many entries the broker acknowledged.

        Sources, in order: entries this relay read but could not publish (its own pending
        list), entries a dead relay left behind (claimed once idle for ``claim_idle``), then
        new entries, waiting up to ``block_ms`` for them when ``block``.
        """
        await self._ensure_group()
        entries: list[tuple[str, dict[str, str]]] = []
        if self._own_pending:
            entries = await self._read("0", block_ms=None)
            self._own_pending = bool(entries)
        now = time.monotonic()
        if not entries and now >= self._next_claim:
            self._next_claim = now + self._claim_idle / 2
            claimed = await self._redis.xautoclaim(
                self.key,
                GROUP,
                self._consumer,
                int(self._claim_idle * 1000),
                "0-0",
                count=self._batch_size,
            )
            entries = [(entry_id, fields) for entry_id, fields in claimed[1] if fields]
        if now >= self._next_report:
            self._next_report = now + 1.0
            pending = await self._redis.xlen(self.key)
            self._metrics.child(self._metrics.outbox_pending).set(pending)
        if not entries:
            entries = await self._read(">", self._block_ms if block else None)
        if not entries:
            return 0
        return await self._publish(entries)

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self._redis.xreadgroup(
            GROUP, self._consumer, {self.key: start}, count=self._batch_size, block=block_ms
        )
        if not reply:
            return []
        # RESP2 answers [[key, entries]]; an entry deleted meanwhile comes with no fields.
        return [(entry_id, fields) for entry_id, fields in reply[0][1] if fields]

    async def _publish(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        futures = [
            await self._producer.enqueue(
                fields["topic"],
                fields["value"].encode(),
                key=fields.get("key") or None,
                message_id=fields.get("id", ""),
                parent=context_from_carrier(fields),
            )
            for _, fields in entries
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        done = [
            entry_id
            for (entry_id, _), result in zip(entries, results, strict=True)
            if not isinstance(result, BaseException)
        ]
        if done:
            async with self._redis.pipeline(transaction=True) as tx:
                tx.xack(self.key, GROUP, *done)
                tx.xdel(self.key, *done)
                await tx.execute()
            self._metrics.child(self._metrics.outbox_published).inc(len(done))
        if len(done) < len(entries):
            error = next(r for r in results if isinstance(r, BaseException))
            missing = len(entries) - len(done)
            raise BrokerUnavailable(f"{missing} of {len(entries)} events not acknowledged: {error}")
        return len(done)
