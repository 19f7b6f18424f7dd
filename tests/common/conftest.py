"""Fixtures of the kit's tests; the infrastructure comes from the session fixtures of
tests/conftest.py (tansu, valkey/redis, the Consul registry, all on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from kit_support import Sample, create_topics, sample_env, unique

from infra.embedded import Endpoints
from infra.process import wait_until


@pytest.fixture(scope="session")
def shared_sample(infra: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    """One consuming sample service for the tests that need no process of their own: a
    consumer group takes seconds to form on tansu, paid once here. Tests on it use their
    own ids and compare metrics before and after."""
    tmp = tmp_path_factory.mktemp("shared")
    topic = unique("kit").replace("-", ".")
    asyncio.run(create_topics(infra.kafka_bootstrap, topic, f"{topic}.dlq"))
    env = sample_env(
        infra.env(), tmp / "traces", SAMPLE_TOPIC=topic, MAX_BODY_BYTES="2048", ADMIN_TOKEN="t0k"
    )
    service = Sample(env, tmp).start()
    service.ready()
    wait_until(
        lambda: (
            service.metric("kafka_consumer_lag", topic=topic) == 0
            and "kafka_consumer_lag{" in service.metrics_text()
        ),
        timeout=15,
        what="the shared sample's consumer has its partitions",
    )
    yield service
    service.stop()


@pytest.fixture
def kit_topic(kafka_bootstrap: str) -> str:
    """A fresh topic (3 partitions) and its ``.dlq``, so no other test's messages show up."""
    topic = unique("kit").replace("-", ".")
    asyncio.run(create_topics(kafka_bootstrap, topic, f"{topic}.dlq"))
    return topic


@pytest.fixture
def samples(infra: Endpoints, tmp_path: Path) -> Iterator[Callable[..., Sample]]:
    """``samples(**env)`` makes a sample-service process (not started); all are stopped at
    the end of the test."""
    made: list[Sample] = []

    def make(**overrides: str) -> Sample:
        sample = Sample(sample_env(infra.env(), tmp_path / "traces", **overrides), tmp_path)
        made.append(sample)
        return sample

    yield make
    for sample in made:
        sample.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()
