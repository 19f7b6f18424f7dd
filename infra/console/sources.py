"""What the console reads, each from where the platform already publishes it.

* the runtime interface (:meth:`Runtime.overview`): services, replicas, rollouts, autoscaler;
* Consul: every instance's check, and the mesh keys in KV (traffic weights, faults);
* each instance's ``/metrics``, parsed by prometheus_client's own text parser;
* Kafka: the committed offsets of every consumer group and the end offsets of its topics;
* Redis: a PING, for its health.

Every reader is asynchronous, bounded by a timeout, and never raises into the collector: a
part that does not answer is reported as such (``ok: False`` and the error) for that second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from infra.kafka.topics import TOPICS
from infra.local import promtext
from infra.runtime import Runtime
from infra.runtime.models import Overview
from services.common.consul import consul_client

log = logging.getLogger(__name__)

TIMEOUT = 2.0
MESH_KV_PREFIX = "mesh/"
# The series the console reads (see Collector._take); the rest of a scrape is not parsed.
SCRAPED = (
    "gateway_requests_total",
    "gateway_request_duration_seconds_bucket",
    "kafka_messages_produced_total",
    "kafka_messages_consumed_total",
    "kafka_consumer_lag",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
)


@dataclass
class Reading:
    """One source's answer for one second."""

    ok: bool
    value: Any = None
    error: str | None = None
    took_ms: float = 0.0


async def _timed(what: str, work: Any) -> Reading:
    started = time.perf_counter()
    try:
        value = await asyncio.wait_for(work, TIMEOUT)
    except Exception as exc:
        took = (time.perf_counter() - started) * 1000
        log.debug("%s failed: %r", what, exc)
        return Reading(False, error=f"{what}: {type(exc).__name__}: {exc}"[:240], took_ms=took)
    return Reading(True, value, took_ms=(time.perf_counter() - started) * 1000)


class RuntimeReader:
    """The runtime's synchronous interface, called in a worker thread."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._infra: dict[str, dict[str, Any]] = {}
        self._infra_at = 0.0

    async def overview(self) -> Reading:
        return await _timed("runtime", asyncio.to_thread(self.runtime.overview))

    async def infra(self, every: float = 15.0) -> dict[str, dict[str, Any]]:
        """The infra parts' addresses (and sources), from ``status()`` now and then: it probes
        every part, too dear to do every second."""
        if not self._infra or time.monotonic() - self._infra_at > every:
            reading = await _timed("runtime status", asyncio.to_thread(self.runtime.status))
            self._infra_at = time.monotonic()
            if reading.ok:
                self._infra = dict(reading.value.infra)
        return self._infra


class Scraper:
    """``GET /metrics`` of every instance, parsed into samples."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _get(self, address: str) -> list[promtext.Sample]:
        assert self._http is not None
        async with self._http.get(f"http://{address}/metrics") as response:
            response.raise_for_status()
            text = await response.text()
        return promtext.parse(text, keep=SCRAPED)

    async def scrape(self, address: str) -> Reading:
        return await _timed(f"scrape {address}", self._get(address))


class ConsulReader:
    """Checks of every instance of the named services, and the mesh keys of KV."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client = consul_client(address)

    async def close(self) -> None:
        await self._client.close()

    async def _checks(self, services: list[str]) -> dict[str, dict[str, str]]:
        """Service ID -> {"status": passing|warning|critical, "output": ...}, for the
        instances of ``services``: one call for all of them (the agent's own checks)."""
        wanted = set(services)
        checks = await self._client.agent.checks()
        out: dict[str, dict[str, str]] = {}
        order = {"passing": 0, "warning": 1, "critical": 2}
        for check in (checks or {}).values():
            service_id = check.get("ServiceID")
            if not service_id or check.get("ServiceName") not in wanted:
                continue
            status = str(check.get("Status", "critical"))
            known = out.get(service_id)
            if known is None or order.get(status, 2) > order.get(known["status"], 2):
                out[service_id] = {"status": status, "output": str(check.get("Output", ""))[:160]}
        return out

    async def checks(self, services: list[str]) -> Reading:
        return await _timed("consul health", self._checks(services))

    async def _kv(self) -> dict[str, Any]:
        _, entries = await self._client.kv.get(MESH_KV_PREFIX, recurse=True)
        out: dict[str, Any] = {}
        for entry in entries or []:
            raw = entry.get("Value")
            try:
                out[entry["Key"]] = json.loads(raw) if raw else None
            except ValueError:
                out[entry["Key"]] = {"malformed": raw.decode(errors="replace")[:120]}
        return out

    async def kv(self) -> Reading:
        return await _timed("consul kv", self._kv())


@dataclass
class KafkaOffsets:
    end: dict[tuple[str, int], int] = field(default_factory=dict)
    committed: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)


class KafkaReader:
    """Committed offsets of each group and end offsets of each topic (Kafka's own view of the
    lag; a replica's ``kafka_consumer_lag`` gauge is its view, and goes with the replica)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: Any = None
        self._consumer: Any = None
        self._retry_at = 0.0

    async def _open(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=2000
        )
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            await _quietly(admin.close())
            await _quietly(consumer.stop())
            raise
        self._admin, self._consumer = admin, consumer

    async def close(self) -> None:
        if self._admin is not None:
            await _quietly(self._admin.close())
        if self._consumer is not None:
            await _quietly(self._consumer.stop())
        self._admin = self._consumer = None

    async def _read(self) -> KafkaOffsets:
        from aiokafka import TopicPartition

        if self._admin is None:
            await self._open()
        partitions = {
            t.name: [TopicPartition(t.name, p) for p in range(t.partitions)] for t in TOPICS
        }
        everything = [tp for tps in partitions.values() for tp in tps]
        end = await self._consumer.end_offsets(everything)
        groups = sorted({g for t in TOPICS for g in t.consumers})
        # tansu answers an OffsetFetch for "all partitions" in a shape aiokafka cannot read:
        # name the partitions of the group's own topics.
        answers = await asyncio.gather(
            *(
                self._admin.list_consumer_group_offsets(
                    group,
                    partitions=[
                        tp for t in TOPICS if group in t.consumers for tp in partitions[t.name]
                    ],
                )
                for group in groups
            )
        )
        return KafkaOffsets(
            end={(tp.topic, tp.partition): int(o) for tp, o in end.items()},
            committed={
                group: {(tp.topic, tp.partition): int(meta.offset) for tp, meta in answer.items()}
                for group, answer in zip(groups, answers, strict=True)
            },
        )

    async def offsets(self) -> Reading:
        if time.monotonic() < self._retry_at:
            return Reading(False, error="kafka: waiting before the next connection attempt")
        reading = await _timed("kafka offsets", self._read())
        if not reading.ok:
            await self.close()
            self._retry_at = time.monotonic() + 3.0
        return reading


class RedisProbe:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self._client = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )

    async def ping(self) -> Reading:
        return await _timed("redis ping", self._client.ping())

    async def close(self) -> None:
        await _quietly(self._client.aclose())


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception as exc:
        log.debug("closing: %r", exc)


__all__ = [
    "ConsulReader",
    "KafkaOffsets",
    "KafkaReader",
    "Overview",
    "Reading",
    "RedisProbe",
    "RuntimeReader",
    "Scraper",
]
