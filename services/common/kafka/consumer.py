"""The consumer runner: at-least-once delivery made effectively-once by the handlers' store.

Rules (README "Consumer rules"):

* one consumer group per service (``group_id = SERVICE_NAME``), offsets committed by hand and
  only after every message of the batch up to that offset has its effects stored;
* a handler's effects, the events it emits (through the outbox) and the "processed" marker of
  the event id go to Redis in ONE transaction; a redelivered event finds the marker and is
  skipped, so handling the same event twice changes nothing;
* a failing handler is retried with exponential backoff; after ``CONSUMER_MAX_ATTEMPTS`` the
  message goes to ``<topic>.dlq`` with the error and the consumer moves on;
* within a batch, messages with different keys (orders) are handled concurrently, messages
  with the same key one after another in offset order;
* on stop (SIGTERM) the batch in progress is finished, its offsets committed, and the
  consumer leaves the group so its partitions move at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry.trace import Span
from pydantic import BaseModel, ValidationError
from redis.asyncio.client import Pipeline

from services.common.backoff import Backoff, sleep_unless
from services.common.faults import FaultInjector, InjectedFault
from services.common.kafka.envelope import Envelope
from services.common.kafka.outbox import Outbox
from services.common.kafka.producer import BrokerUnavailable, EventProducer
from services.common.metrics import Metrics
from services.common.redis import REDIS_UNAVAILABLE, GroupCommit
from services.common.settings import ServiceSettings
from services.common.tracing import mark_error, process_span

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the message goes to the DLQ at once."""


M = TypeVar("M", bound=BaseModel)


def event_data(model: type[M], event: Envelope) -> M:
    """The event's ``data`` as ``model``; data that does not fit can never be handled, so it
    goes straight to the DLQ instead of being retried."""
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise PermanentError(f"invalid {event.type} data: {exc}") from None


@dataclass
class HandlerContext:
    """What a handler gets besides the event.

    ``tx`` is a Redis transaction pipeline (``MULTI``/``EXEC``): queue the handler's writes
    on it (and emit events with :meth:`emit`); the runner adds the processed marker and
    executes it. Reads go through ``redis``. Read-then-write logic that must be atomic belongs
    in a Lua script queued on ``tx`` with ``tx.eval(...)``, never ``evalsha``: inside MULTI a
    NOSCRIPT error (after a Redis restart) fails that command alone while EXEC still stores
    the processed marker, and the effect would be lost. Such a script can emit events itself
    with ``outbox.fields(...)`` passed as arguments.
    """

    topic: str
    partition: int
    offset: int
    attempt: int
    group: str
    redis: aioredis.Redis
    tx: Pipeline
    outbox: Outbox

    def emit(self, topic: str, event: Envelope) -> None:
        self.outbox.stage(self.tx, topic, event)


Handler = Callable[[Envelope, HandlerContext], Awaitable[None]]


LEAVE_SPACING_MS = 1000
LEAVE_WAIT = 5.0
# KAFKA_FETCH_MIN_BYTES: a fetch answers once this much is there (or after
# KAFKA_FETCH_MAX_WAIT_MS): under load a fetch brings a batch (about 15 events) instead of
# the one or two that arrived since the last, which costs the broker and this process a
# request each. tansu holds a fetch that finds nothing up to the max wait anyway, so an idle
# hop takes no longer. Measured on bench-saga at 330 orders/s: CPU per order 5.3 -> 4.6 ms,
# p50 and p99 no worse.


def processed_key(group: str, event_id: str) -> str:
    return f"mesh:processed:{group}:{event_id}"


class _Revocation(ConsumerRebalanceListener):
    def __init__(self, runner: ConsumerRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # The batch in progress commits when it ends; waiting for it means the next owner of
        # these partitions starts right after the last message whose effects we stored.
        async with self._runner.batch_lock:
            self._runner.forget_lag(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})


@dataclass
class _BatchState:
    # Offsets whose outcome is stored, per partition: what may be committed.
    done: dict[TopicPartition, set[int]] = field(default_factory=dict)
    # Event ids processed before (markers found) or earlier in this batch.
    processed: set[str] = field(default_factory=set)


class ConsumerRunner:
    def __init__(
        self,
        settings: ServiceSettings,
        handlers: Mapping[str, Handler],
        *,
        redis: aioredis.Redis,
        producer: EventProducer,
        outbox: Outbox,
        metrics: Metrics,
        faults: FaultInjector | None = None,
        group_id: str | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a consumer runner needs at least one topic handler")
        self._settings = settings
        self._handlers = dict(handlers)
        self._redis = redis
        self._producer = producer
        self._outbox = outbox
        self._metrics = metrics
        self._faults = faults
        self.group_id = group_id or settings.SERVICE_NAME
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._semaphore = asyncio.Semaphore(settings.CONSUMER_CONCURRENCY)
        self.batch_lock = asyncio.Lock()
        self._next_lag = 0.0
        # Handlers that finish together store their effects in one transaction.
        self._commits = GroupCommit(redis)
        self._ttl = int(settings.IDEMPOTENCY_TTL)

    @property
    def topics(self) -> list[str]:
        return sorted(self._handlers)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.group_id}")

    async def stop(self) -> None:
        """Finish the batch in progress, commit, leave the group."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # --- the poll loop ------------------------------------------------------------------

    async def _connect(self) -> AIOKafkaConsumer | None:
        backoff = Backoff(base=0.2, cap=5.0)
        s = self._settings
        while not self._stop.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=s.KAFKA_BOOTSTRAP_SERVERS,
                group_id=self.group_id,
                client_id=s.instance_id,
                enable_auto_commit=False,
                auto_offset_reset=s.KAFKA_AUTO_OFFSET_RESET,
                session_timeout_ms=s.KAFKA_SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=s.KAFKA_HEARTBEAT_INTERVAL_MS,
                max_poll_records=s.CONSUMER_BATCH_SIZE,
                fetch_max_wait_ms=s.KAFKA_FETCH_MAX_WAIT_MS,
                fetch_min_bytes=s.KAFKA_FETCH_MIN_BYTES,
                request_timeout_ms=max(s.KAFKA_REQUEST_TIMEOUT_MS, s.KAFKA_SESSION_TIMEOUT_MS + 1),
            )
            consumer.subscribe(self.topics, listener=_Revocation(self))
            try:
                # start() waits for the first assignment: a join that never completes (see
                # _consume) must not hold it forever either.
                await asyncio.wait_for(consumer.start(), timeout=s.CONSUMER_STUCK_AFTER)
            except TimeoutError:
                await consumer.stop()
                log.warning(
                    "no assignment %.0fs after joining: joining again as a new member",
                    s.CONSUMER_STUCK_AFTER,
                    extra={"group": self.group_id},
                )
                await self._rejoin_pause()
                continue
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                delay = backoff.next()
                log.warning("kafka consumer cannot start: %s; retrying in %.2fs", exc, delay)
                await sleep_unless(self._stop, delay)
                continue
            log.info("consumer started", extra={"group": self.group_id, "topics": self.topics})
            return consumer
        return None

    async def _run(self) -> None:
        while not self._stop.is_set():
            consumer = await self._connect()
            if consumer is None:
                return
            if await self._consume(consumer):
                await self._rejoin_pause()

    async def _rejoin_pause(self) -> None:
        """A random pause before joining again: members that all leave a stuck group at once
        and come straight back race their own leaves (the race that stuck it), while staggered
        ones let the group empty and elect a leader that is really there."""
        session = self._settings.KAFKA_SESSION_TIMEOUT_MS / 1000
        await sleep_unless(self._stop, random.uniform(0.5, 0.5 + session))

    async def _consume(self, consumer: AIOKafkaConsumer) -> bool:
        """Poll and handle until stopped, or until a rebalance never completes: tansu can
        keep a group waiting forever for the SyncGroup of a leader that left while members
        were joining, and joining again as a new member gets it out (real Kafka does not need
        this; there it costs nothing). getmany() returns within a second except while its
        consumer waits for an assignment, so a fetch pending for CONSUMER_STUCK_AFTER is that."""
        stopped = asyncio.ensure_future(self._stop.wait())
        fetch: asyncio.Future[dict[TopicPartition, list[Record]]] | None = None
        fetch_started = 0.0
        rejoin = False
        try:
            while not self._stop.is_set():
                if fetch is None:
                    fetch_started = time.monotonic()
                    fetch = asyncio.ensure_future(
                        consumer.getmany(
                            timeout_ms=1000, max_records=self._settings.CONSUMER_BATCH_SIZE
                        )
                    )
                # getmany waits as long as a rebalance lasts: look up now and then.
                await asyncio.wait(
                    {fetch, stopped}, timeout=2.0, return_when=asyncio.FIRST_COMPLETED
                )
                waited = time.monotonic() - fetch_started
                stuck = not fetch.done() and waited > self._settings.CONSUMER_STUCK_AFTER
                if self._stop.is_set() or stuck:
                    # Records fetched but not handled are simply fetched again by whoever
                    # owns the partition next: nothing was committed for them.
                    fetch.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
                    if not self._stop.is_set():
                        rejoin = True
                        log.warning(
                            "no assignment for %.0fs (a rebalance that does not complete): "
                            "leaving the group to join again",
                            waited,
                            extra={"group": self.group_id},
                        )
                    break
                if not fetch.done():
                    continue
                done, fetch = fetch, None
                try:
                    batch = done.result()
                except KafkaError as exc:
                    log.warning("kafka fetch failed: %s", exc)
                    continue
                if batch:
                    async with self.batch_lock:
                        await self._process_batch(consumer, batch)
                await self._update_lag(consumer)
        finally:
            stopped.cancel()
            if not rejoin:
                await self._settle_before_leaving(consumer)
            _leave_even_from_generation_zero(consumer)
            await self._wait_leave_turn()
            # Leaves the group: the partitions are reassigned without waiting for a timeout.
            await consumer.stop()
            log.info("consumer stopped", extra={"group": self.group_id})
        return rejoin

    async def _settle_before_leaving(self, consumer: AIOKafkaConsumer) -> None:
        """Leave only a settled group. tansu keeps a group's leader through a rebalance and
        elects another only when none is set, so a leader that leaves while a round is still
        forming (a member has just joined, and its next heartbeat would have said so) leaves
        the others waiting for its SyncGroup for ever: a rolling update that does not wait
        for readiness does exactly that. So ask first (one heartbeat): if a rebalance is
        under way, take part until it completes, within half the grace period."""
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is None:
            return
        session = self._settings.KAFKA_SESSION_TIMEOUT_MS / 1000
        deadline = time.monotonic() + min(
            2 * session + 1, self._settings.SHUTDOWN_GRACE_SECONDS / 2
        )
        try:
            while time.monotonic() < deadline:
                # A heartbeat that finds the group rebalancing asks for the rejoin itself.
                await coordinator._do_heartbeat()
                subscription = coordinator._subscription.subscription
                if subscription is None or not coordinator.need_rejoin(subscription):
                    return
                log.info("a rebalance is under way: completing it before leaving")
                while time.monotonic() < deadline:
                    if not coordinator.need_rejoin(subscription):
                        break  # the round completed: ask again, another may have begun
                    await asyncio.sleep(0.05)
        except Exception as exc:  # a broker gone or a consumer closing: leave as it is
            log.debug("could not settle the group before leaving: %r", exc)

    async def _wait_leave_turn(self) -> None:
        """Members of one group leave at least LEAVE_SPACING apart. tansu loses its group
        leader when two members (the leader among them) leave within the same moment, as a
        runtime stopping a whole replica set does: the rest then wait for a leader that is
        gone. A short Redis lease per group spaces the leaves; it expires by itself, and
        without Redis (or after LEAVE_WAIT) the member simply leaves."""
        key = f"mesh:leave:{self.group_id}"
        deadline = time.monotonic() + LEAVE_WAIT
        while time.monotonic() < deadline:
            try:
                if await self._redis.set(
                    key, self._settings.instance_id, nx=True, px=LEAVE_SPACING_MS
                ):
                    return
            except REDIS_UNAVAILABLE:
                return
            await asyncio.sleep(0.1)

    async def _process_batch(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, list[Record]]
    ) -> None:
        state = _BatchState(done={tp: set() for tp in batch})
        events: dict[tuple[TopicPartition, int], Envelope | ValidationError] = {}
        for tp, records in batch.items():
            for record in records:
                try:
                    events[tp, record.offset] = Envelope.from_json(record.value or b"")
                except ValidationError as exc:
                    events[tp, record.offset] = exc
        if not await self._load_processed(events.values(), state):
            return  # stopping while Redis is away: nothing handled, nothing committed

        chains: list[Awaitable[None]] = []
        for tp, records in batch.items():
            by_key: dict[bytes | None, list[Record]] = {}
            for record in records:
                by_key.setdefault(record.key, []).append(record)
            chains.extend(self._run_chain(tp, chain, events, state) for chain in by_key.values())
        await asyncio.gather(*chains)

        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for record in records:
                if record.offset not in state.done[tp]:
                    # Only when stopping: fetch it again if we were to go on.
                    consumer.seek(tp, record.offset)
                    break
                offsets[tp] = record.offset + 1
        if offsets:
            try:
                await consumer.commit(offsets)
            except CommitFailedError as exc:
                # The partitions moved to another member, which will redeliver these
                # messages; the processed markers make that harmless.
                log.warning("commit failed after a rebalance: %s", exc)

    async def _load_processed(
        self, events: Iterable[Envelope | ValidationError], state: _BatchState
    ) -> bool:
        """Find the events of the batch already processed, in one round trip."""
        ids = list({str(e.id) for e in events if isinstance(e, Envelope)})
        if not ids:
            return True
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                found = await self._redis.mget([processed_key(self.group_id, i) for i in ids])
            except REDIS_UNAVAILABLE as exc:
                log.warning("redis unavailable before handling a batch: %s", exc)
                if await sleep_unless(self._stop, backoff.next()):
                    return False
                continue
            state.processed.update(i for i, marker in zip(ids, found, strict=True) if marker)
            return True

    async def _run_chain(
        self,
        tp: TopicPartition,
        chain: list[Record],
        events: Mapping[tuple[TopicPartition, int], Envelope | ValidationError],
        state: _BatchState,
    ) -> None:
        for record in chain:
            async with self._semaphore:
                finished = await self._process_record(record, events[tp, record.offset], state)
            if not finished:
                return  # later messages of this key must not overtake this one
            state.done[tp].add(record.offset)

    # --- one message ----------------------------------------------------------------------

    async def _process_record(
        self, record: Record, event: Envelope | ValidationError, state: _BatchState
    ) -> bool:
        """Handle, skip as duplicate, or dead-letter one message; False if interrupted."""
        if isinstance(event, ValidationError):
            error = PermanentError(f"invalid envelope: {event}")
            return await self._dead_letter(record, None, error, 1)
        started = time.perf_counter()
        with process_span(
            record.topic,
            partition=record.partition,
            offset=record.offset,
            message_id=str(event.id),
            key=event.order_id,
            group=self.group_id,
            headers=record.headers,
        ) as span:
            if str(event.id) in state.processed:
                self._count(record.topic, "duplicate")
                span.set_attribute("mesh.outcome", "duplicate")
                return True
            finished = await self._handle_with_retries(record, event, span)
        if finished:
            state.processed.add(str(event.id))
        m = self._metrics
        m.child(m.kafka_handle_latency, record.topic).observe(time.perf_counter() - started)
        return finished

    def _count(self, topic: str, outcome: str) -> None:
        self._metrics.child(self._metrics.kafka_consumed, topic, outcome).inc()

    async def _handle_with_retries(self, record: Record, event: Envelope, span: Span) -> bool:
        settings = self._settings
        backoff = Backoff(
            base=settings.CONSUMER_RETRY_BACKOFF, cap=settings.CONSUMER_RETRY_BACKOFF_MAX
        )
        attempt = 0
        errors = self._metrics.child(self._metrics.kafka_handler_errors, record.topic)
        while True:
            try:
                if self._faults is not None:
                    await self._faults.inject()
                await self._handle_once(record, event, attempt + 1)
            except InjectedFault:
                # Drills inject faults to watch recovery: retried without limit, never a DLQ.
                errors.inc()
            except REDIS_UNAVAILABLE as exc:
                # The store is down, not the message: wait for it without using up attempts.
                log.warning("redis unavailable while handling %s: %s", record.topic, exc)
            except PermanentError as exc:
                errors.inc()
                mark_error(span, exc)
                return await self._dead_letter(record, event, exc, attempt + 1)
            except Exception as exc:
                attempt += 1
                errors.inc()
                log.warning(
                    "handler failed",
                    exc_info=True,
                    extra={"topic": record.topic, "event_id": str(event.id), "attempt": attempt},
                )
                if attempt >= settings.CONSUMER_MAX_ATTEMPTS:
                    mark_error(span, exc)
                    return await self._dead_letter(record, event, exc, attempt)
            else:
                span.set_attribute("mesh.outcome", "handled")
                self._count(record.topic, "handled")
                return True
            if await sleep_unless(self._stop, backoff.next()):
                return False

    async def _handle_once(self, record: Record, event: Envelope, attempt: int) -> None:
        """Run the handler and store its effects with the processed marker, atomically."""
        marker = processed_key(self.group_id, str(event.id))
        async with self._redis.pipeline(transaction=True) as tx:
            context = HandlerContext(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                attempt=attempt,
                group=self.group_id,
                redis=self._redis,
                tx=tx,
                outbox=self._outbox,
            )
            await self._handlers[record.topic](event, context)
            tx.set(marker, "1", nx=True, ex=self._ttl)
            results = await self._commits.execute(tx)
        if results[-1] is None:
            # Only if another member handled the same message at the same moment (it was
            # evicted from the group while still working): its effects were applied twice.
            log.warning(
                "event handled concurrently by two members",
                extra={"topic": record.topic, "event_id": str(event.id)},
            )

    async def _dead_letter(
        self, record: Record, event: Envelope | None, error: BaseException, attempts: int
    ) -> bool:
        payload = {
            "original": event.model_dump(mode="json") if event else _raw(record.value),
            "error": {"type": type(error).__name__, "message": str(error)},
            "attempts": attempts,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "group": self.group_id,
            "failed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        value = json.dumps(payload).encode()
        key = record.key.decode(errors="replace") if record.key else None
        message_id = (
            str(event.id) if event else f"{record.topic}.{record.partition}.{record.offset}"
        )
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            try:
                future = await self._producer.enqueue(
                    f"{record.topic}.dlq", value, key=key, message_id=message_id
                )
                await future
            except (BrokerUnavailable, KafkaError) as exc:
                log.warning("cannot publish to %s.dlq: %s", record.topic, exc)
                if await sleep_unless(self._stop, backoff.next()):
                    return False
                continue
            break
        log.error(
            "message dead-lettered",
            extra={"topic": record.topic, "offset": record.offset, "error": str(error)},
        )
        self._metrics.kafka_dlq.labels(**self._metrics.base, topic=record.topic).inc()
        self._count(record.topic, "dead_lettered")
        return True

    # --- lag ------------------------------------------------------------------------------

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + 1.0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 0.5)
            except (TimeoutError, KafkaError):
                continue
            if position > highwater:
                await self._reset_beyond_log_end(consumer, tp, position)
                continue
            self._metrics.kafka_lag.labels(
                **self._metrics.base, topic=tp.topic, partition=str(tp.partition)
            ).set(max(highwater - position, 0))

    async def _reset_beyond_log_end(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, position: int
    ) -> None:
        """A position past the log's end means the broker lost its log (tansu with memory
        storage, restarted). Kafka answers a fetch there with OFFSET_OUT_OF_RANGE and the
        consumer resets by ``auto_offset_reset``; tansu answers with no records and no error,
        and takes a commit of such an offset (a batch committed during its restart does it),
        so the consumer would wait there while the new log's events went unread. Reset as
        Kafka would; the processed markers make reading events again harmless."""
        try:
            end = (await asyncio.wait_for(consumer.end_offsets([tp]), 2.0))[tp]
        except (TimeoutError, KafkaError):
            return
        if position <= end:
            return  # the high watermark was only behind
        log.warning(
            "position %d of %s is past the log's end (%d): the broker lost its log; "
            "reading from the %s",
            position,
            tp,
            end,
            "start" if self._settings.KAFKA_AUTO_OFFSET_RESET == "earliest" else "end",
        )
        if self._settings.KAFKA_AUTO_OFFSET_RESET == "earliest":
            await consumer.seek_to_beginning(tp)
        else:
            await consumer.seek_to_end(tp)

    def forget_lag(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            try:
                self._metrics.kafka_lag.remove(
                    self._metrics.service, self._metrics.version, tp.topic, str(tp.partition)
                )
            except KeyError:
                pass


def _leave_even_from_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """tansu numbers a group's first generation 0, and aiokafka sends LeaveGroup only for
    generations above 0: the partitions would then wait for the session timeout before
    moving. LeaveGroup carries no generation, so presenting 1 is enough to send it."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0:
        coordinator.generation = 1


def _raw(value: bytes | None) -> Any:
    text = (value or b"").decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
