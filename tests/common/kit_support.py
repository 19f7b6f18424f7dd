"""Helpers for the kit's tests: the sample service as a real process, unique topics, polling."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import consul
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.process import ManagedProcess, free_port, wait_until

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).resolve().parent / "sample_service.py"


def consul_sync(addr: str) -> consul.Consul:
    """A blocking Consul client for ``http://host:port``."""
    host, port = addr.removeprefix("http://").split(":")
    return consul.Consul(host=host, port=int(port))


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
    """Poll an async ``probe`` until ``until(result)`` holds (by default: the result is
    truthy), or fail naming ``what``."""
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


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """A blocking HTTP call that returns error statuses instead of raising."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Sample:
    """One sample-service process."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = env["SERVICE_NAME"]
        self.ns = env["SAMPLE_NS"]
        self.topic = env["SAMPLE_TOPIC"]
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        self.proc = ManagedProcess(
            self.name, [sys.executable, str(SAMPLE)], log_path=self.log_path, env=env, cwd=ROOT
        )

    @property
    def instance_id(self) -> str:
        return f"{self.name}-127.0.0.1-{self.port}"

    def start(self, timeout: float = 15.0) -> Sample:
        self.proc.start()
        wait_until(
            lambda: http("GET", f"{self.url}/healthz", timeout=1)[0] == 200,
            timeout=timeout,
            what=f"{self.name} /healthz ({self.proc.log_tail()})",
            alive=self.proc.alive,
        )
        return self

    def ready(self, timeout: float = 10.0) -> None:
        wait_until(
            lambda: http("GET", f"{self.url}/readyz", timeout=1)[0] == 200,
            timeout=timeout,
            what=f"{self.name} /readyz",
            alive=self.proc.alive,
        )

    def request(
        self, method: str, path: str, payload: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        body = None if payload is None else json.dumps(payload).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        status, response_headers, raw = http(method, self.url + path, body, all_headers)
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, response_headers, parsed

    def metrics_text(self) -> str:
        return http("GET", f"{self.url}/metrics")[2].decode()

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

    def stop(self) -> int | None:
        return self.proc.stop(timeout=15)


def sample_env(infra_env: Mapping[str, str], traces_dir: Path, **overrides: str) -> dict[str, str]:
    name = unique("sample")
    env = {
        **infra_env,
        "SERVICE_NAME": name,
        "SERVICE_VERSION": "v3",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "SAMPLE_NS": name,
        "SAMPLE_TOPIC": "unset",
        "MESH_TRACES_DIR": str(traces_dir),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "CHECK_INTERVAL": "200ms",
        "CHECK_TIMEOUT": "500ms",
        "SHUTDOWN_GRACE_SECONDS": "8",
        "CONSUMER_MAX_ATTEMPTS": "3",
        "CONSUMER_RETRY_BACKOFF": "10ms",
        "CONSUMER_RETRY_BACKOFF_MAX": "50ms",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(overrides)
    return env


async def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 1 if name.endswith(".dlq") else partitions, 1) for name in names]
        )
    finally:
        await admin.close()


async def publish(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers or []) for value in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 10.0) -> list[Any]:
    """The first ``count`` records of ``topic`` (all partitions, from the beginning)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records
