"""A Kafka producer that survives the broker being away, with a span per message."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from opentelemetry.context import Context
from opentelemetry.trace import Span

from services.common.kafka.envelope import Envelope
from services.common.metrics import Metrics
from services.common.settings import ServiceSettings
from services.common.tracing import headers_for_span, mark_error, start_send_span

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The producer could not be started: no broker answered."""


class EventProducer:
    """Wraps ``AIOKafkaProducer``: started lazily and restarted after a failed start, so a
    service comes up (and keeps its outbox) while the broker is down.

    Values are JSON bytes, keys the order id; ``traceparent`` rides in the headers of every
    message, taken from a ``send <topic>`` span that lasts until the broker's acknowledgement.
    """

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._probe_at = 0.0
        self._probe_ok = False
        self._logged_outage = False

    def _build(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=s.KAFKA_BOOTSTRAP_SERVERS,
            client_id=s.instance_id,
            acks="all" if s.KAFKA_ACKS == "all" else 1,
            enable_idempotence=s.KAFKA_ENABLE_IDEMPOTENCE,
            linger_ms=s.KAFKA_LINGER_MS,
            request_timeout_ms=s.KAFKA_REQUEST_TIMEOUT_MS,
            retry_backoff_ms=100,
            max_batch_size=64 * 1024,
        )

    async def ensure_started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = self._build()
                try:
                    await producer.start()
                except (KafkaError, OSError) as exc:
                    await producer.stop()
                    if not self._logged_outage:
                        log.warning("kafka producer cannot start: %s", exc)
                        self._logged_outage = True
                    raise BrokerUnavailable(str(exc)) from exc
                if self._logged_outage:
                    log.info("kafka producer started after an outage")
                    self._logged_outage = False
                self._producer = producer
        return self._producer

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        message_id: str,
        parent: Context | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Hand one message to the producer's batch; the future resolves on the broker's ack.

        Calling this for many messages before awaiting any future keeps them in one batch per
        partition, in call order.
        """
        producer = await self.ensure_started()
        span = start_send_span(topic, message_id=message_id, key=key, parent=parent)
        try:
            future = await producer.send(
                topic,
                value,
                key=key.encode() if key is not None else None,
                headers=headers_for_span(span),
            )
        except BaseException as exc:
            self._finish(topic, span, exc)
            raise
        future.add_done_callback(lambda done: self._finish(topic, span, _error_of(done)))
        return future

    def _finish(self, topic: str, span: Span, exc: BaseException | None) -> None:
        if exc is None:
            self._metrics.child(self._metrics.kafka_produced, topic).inc()
        else:
            self._metrics.child(self._metrics.kafka_produce_errors, topic).inc()
            mark_error(span, exc)
        span.end()

    async def send(self, topic: str, event: Envelope, *, parent: Context | None = None) -> None:
        """Publish one event now and wait for the acknowledgement.

        Prefer the outbox for events that follow a state change: this call fails while the
        broker is away.
        """
        future = await self.enqueue(
            topic,
            event.to_json().encode(),
            key=event.order_id,
            message_id=str(event.id),
            parent=parent,
        )
        await future

    async def probe(self, timeout: float = 1.0) -> bool:
        """Whether a broker answers; cached for a second so probes stay cheap."""
        now = time.monotonic()
        if now - self._probe_at < 1.0:
            return self._probe_ok
        self._probe_at = now
        try:
            producer = await asyncio.wait_for(self.ensure_started(), timeout)
            cluster = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
            self._probe_ok = bool(cluster.brokers())
        except (TimeoutError, BrokerUnavailable, KafkaError, OSError):
            self._probe_ok = False
        return self._probe_ok

    async def stop(self) -> None:
        """Flush what is batched and close; waits at most the request timeout."""
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()


def _error_of(future: asyncio.Future[RecordMetadata]) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()
