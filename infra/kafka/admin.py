"""Create the declared topics on any Kafka-protocol broker (tansu or a real Kafka)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka.topics import all_topics

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(bootstrap: str, replication: int = 1) -> list[str]:
    """Create every declared topic that is missing; return the names that were created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="meshctl")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = all_topics()
        missing = [
            NewTopic(name, partitions, replication)
            for name, partitions in wanted.items()
            if name not in existing
        ]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        failed = [
            f"{topic}: {message or code}"
            for topic, code, message in response.topic_errors
            if code not in (0, _TOPIC_ALREADY_EXISTS)
        ]
        if failed:
            raise RuntimeError("could not create topics: " + "; ".join(failed))
        return [t.name for t in missing]
    finally:
        await admin.close()
