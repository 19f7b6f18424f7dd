"""A Kafka client of the user's own, not the platform's: librdkafka (``confluent-kafka``) in a
consumer group on the embedded broker (tansu), with the settings ``meshctl infra status``
prints, reads an order's events and their ``traceparent`` header.

Real parts: ``meshctl infra up`` starts tansu, valkey and the registry in a state folder of
this module; orders and inventory run as real processes on them and make the events.
librdkafka's default session timeout (45 s) would keep the group waiting about 23 s for its
partitions on tansu (measured: 23.0 s; 3.0 s with 6 s), which is why meshctl names it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError

from infra.embedded import Endpoints
from infra.process import ManagedProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "infra.meshctl"]
OWN_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")
TOPICS = ["order.created", "inventory.reserved"]
# Well under librdkafka's 45 s default: the point is that the printed settings join quickly.
JOIN_WITHIN = 15.0


def _meshctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARS}
    env["MESH_HOME"] = str(home)
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("own-client")
    up = _meshctl(home, "infra", "up")
    assert up.returncode == 0, up.stderr
    yield home
    _meshctl(home, "infra", "down")


def test_infra_status_prints_the_bootstrap_and_client_settings(home: Path) -> None:
    table = _meshctl(home, "infra", "status")
    assert table.returncode == 0, table.stderr
    status = json.loads(_meshctl(home, "infra", "status", "--json").stdout)
    [kafka] = [p for p in status["infra"] if p["name"] == "kafka"]
    settings = status["kafka_client"]
    assert settings["bootstrap.servers"] == kafka["address"]
    assert int(settings["session.timeout.ms"]) <= 10_000
    for name, value in settings.items():
        assert f"{name}={value}" in table.stdout, table.stdout


@dataclass
class Service:
    name: str
    port: int
    process: ManagedProcess

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False


def _start(home: Path, endpoints: Endpoints, name: str) -> Service:
    port = free_port()
    env = {
        **endpoints.env(),
        "PORT": str(port),
        "CONSUL_HTTP_ADDR": "",
        "MESH_TRACES_DIR": str(home / "traces"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "300",
    }
    process = ManagedProcess(
        f"{name}-{port}",
        [sys.executable, "-m", f"services.{name}"],
        log_path=home / "logs" / f"{name}-{port}.log",
        env=env,
        cwd=ROOT,
    )
    process.start()
    return Service(name, port, process)


def _place_order(orders: Service) -> str:
    body = {"customer_id": "byo-c", "items": [{"sku": "SKU-003", "quantity": 1}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{orders.port}/orders",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 202
        return str(json.loads(answer.read())["id"])


def test_a_librdkafka_consumer_group_reads_an_orders_events_and_traceparent(home: Path) -> None:
    status = json.loads(_meshctl(home, "infra", "status", "--json").stdout)
    settings: dict[str, Any] = dict(status["kafka_client"])
    parts = {p["name"]: p["address"] for p in status["infra"]}
    endpoints = Endpoints(parts["kafka"], parts["redis"], parts["consul"])

    consumer = Consumer({**settings, "group.id": f"byo-{uuid.uuid4().hex[:8]}"})
    assigned: list[float] = []
    consumer.subscribe(TOPICS, on_assign=lambda _c, partitions: assigned.append(time.monotonic()))
    services = [_start(home, endpoints, name) for name in ("orders", "inventory")]
    seen: dict[str, dict[str, bytes]] = {}
    try:
        started = time.monotonic()
        while not assigned and time.monotonic() - started < JOIN_WITHIN:
            consumer.poll(0.1)  # joins the group; nothing is produced yet
        assert assigned, f"no partitions within {JOIN_WITHIN}s with {settings}"
        for service in services:
            wait_until(service.ready, timeout=30, what=f"{service.name} ready")

        order_id = _place_order(services[0])
        deadline = time.monotonic() + 30
        while set(seen) != set(TOPICS) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            assert error is None or error.code() == KafkaError._PARTITION_EOF, error
            if error is None and message.key() == order_id.encode():
                seen[message.topic()] = dict(message.headers() or [])
                event = json.loads(message.value())
                assert event["order_id"] == order_id and event["type"] == message.topic()
    finally:
        consumer.close()
        for service in services:
            service.process.stop(timeout=10)
    assert set(seen) == set(TOPICS), f"read {sorted(seen)} of the order's events"
    trace_ids = {headers["traceparent"].split(b"-")[1] for headers in seen.values()}
    assert len(trace_ids) == 1, "one trace: both events carry the order's traceparent"
