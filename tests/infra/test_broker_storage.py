"""The broker made durable by one setting: with ``MESH_KAFKA_STORAGE=s3://BUCKET/`` tansu keeps
its topics and messages across a restart, where the default ``memory://`` loses them.

Real: tansu (the bundled build), its restart by the embedded infra, aiokafka. The S3 store is
moto's server, a separate process answering the S3 HTTP API on loopback: no S3 store (nor a
tansu built with PostgreSQL storage) runs on these machines."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.embedded import Infra
from infra.process import ManagedProcess, free_port, wait_until

TOPIC = "order.created"
MESSAGES = 20


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The AWS_* settings of a bucket on a moto S3 server of this module's own."""
    port = free_port()
    moto = str(Path(sys.executable).with_name("moto_server"))
    server = ManagedProcess(
        "moto",
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        log_path=tmp_path_factory.mktemp("moto") / "moto.log",
    )
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(endpoint), timeout=30, what="moto S3", alive=server.alive)
        settings = {
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "mesh-test",
            "AWS_SECRET_ACCESS_KEY": "mesh-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
            region_name=settings["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket="tansu")
        yield settings
    finally:
        server.stop()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint, timeout=1):
            return True
    except OSError as exc:
        return hasattr(exc, "code")  # an HTTP error is an answer


def environ(**extra: str) -> dict[str, str]:
    drop = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AWS_")}
    return {**env, **extra}


async def produce(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(MESSAGES):
            await producer.send_and_wait(TOPIC, f"m{n}".encode(), key=b"order-1")
    finally:
        await producer.stop()


async def count(bootstrap: str, timeout: float = 5.0) -> int:
    """Messages read from the start of the topic: all of them, or what came within
    ``timeout`` (a topic that lost them gives nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < MESSAGES and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            seen += sum(len(records) for records in batch.values())
        return seen
    finally:
        await consumer.stop()


@pytest.mark.parametrize("storage", ["s3://tansu/", "memory://tansu/"])
def test_broker_restart_keeps_messages_only_with_durable_storage(
    storage: str, s3: dict[str, str], tmp_path: Path
) -> None:
    env = environ(MESH_KAFKA_STORAGE=storage, **(s3 if storage.startswith("s3") else {}))
    with Infra(tmp_path, detached=True, environ=env) as infra:
        bootstrap = infra.endpoints.kafka_bootstrap
        asyncio.run(produce(bootstrap))
        assert asyncio.run(count(bootstrap)) == MESSAGES
        infra.stop_part("kafka")
        infra.start_part("kafka")  # from this process: the AWS_* settings come from the record
        kept = asyncio.run(count(bootstrap))
    assert kept == (MESSAGES if storage.startswith("s3") else 0)
