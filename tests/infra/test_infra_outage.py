"""An outage of one infrastructure part (what the broker-restart drill does): the part stops,
status says so, and it comes back at the same address with the topics created again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from infra.embedded import Infra, StartError
from infra.embedded.probes import kafka_answers
from infra.kafka.topics import all_topics
from infra.process import pid_alive


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[Infra]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR")
    }
    with Infra(tmp_path, detached=True, environ=environ) as started:
        yield started


async def topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_kafka_stops_and_comes_back_with_its_topics(infra: Infra) -> None:
    bootstrap = infra.endpoints.kafka_bootstrap
    infra.stop_part("kafka")
    kafka = next(row for row in infra.status() if row["name"] == "kafka")
    assert kafka["state"] == "stopped" and not kafka["healthy"]
    assert not kafka_answers(bootstrap)
    assert infra.running(), "a part stopped on purpose does not make the infra 'not running'"

    infra.start_part("kafka")
    assert infra.endpoints.kafka_bootstrap == bootstrap, "same address after the restart"
    kafka = next(row for row in infra.status() if row["name"] == "kafka")
    assert kafka["state"] == "running" and kafka["healthy"]
    assert set(all_topics()) <= asyncio.run(topics(bootstrap))


def test_unknown_part_is_one_clear_line(infra: Infra) -> None:
    with pytest.raises(StartError, match="no infrastructure part 'zookeeper'"):
        infra.stop_part("zookeeper")


def test_down_after_a_stop_leaves_nothing(infra: Infra) -> None:
    pids = [r.pid for r in infra.records().values() if r.pid]
    infra.stop_part("redis")
    assert sorted(infra.down()) == ["consul", "kafka"]
    assert not infra.state_path.exists()
    assert not any(pid_alive(pid) for pid in pids)
