"""A consumer group on tansu survives its leader leaving while a new member joins.

tansu keeps a group's leader through a rebalance and elects another only when it is asked to
join with none set: a leader that leaves while the round is still forming (it has not yet
heard of the new member: its next heartbeat would have told it) leaves the others waiting
for its SyncGroup for ever. A rolling update that does not wait for readiness does exactly
that: the new replica joins and the old one is stopped a moment later. The kit's member
therefore asks (a heartbeat) before it leaves and, if a rebalance is under way, takes part
until it completes. Real processes, real tansu, real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from kit_support import Sample, eventually, publish

from services.common.kafka.envelope import make_event


async def _members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
        return len(described[0].groups[0][5])
    finally:
        await admin.close()


async def _handled(redis_client: aioredis.Redis, sample: Sample) -> int:
    return int(await redis_client.hlen(f"{sample.ns}:handled"))


async def test_the_group_forms_again_when_its_leader_leaves_as_a_member_joins(
    samples: Callable[..., Sample],
    kit_topic: str,
    kafka_bootstrap: str,
    redis_client: aioredis.Redis,
) -> None:
    # The platform's heartbeat: a second in which the leader has not heard of the join.
    env = {"SAMPLE_TOPIC": kit_topic, "KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
    leader = samples(**env).start()
    await publish(
        kafka_bootstrap, kit_topic, [make_event("item.created", "a", {}).to_json().encode()]
    )
    await eventually(lambda: _handled(redis_client, leader), timeout=20, what="the leader consumes")
    group = leader.name
    newcomer = samples(**{**env, "SAMPLE_NS": leader.ns, "SERVICE_NAME": group})
    newcomer.proc.start()
    await eventually(
        lambda: _members(kafka_bootstrap, group),
        until=lambda n: n >= 2,
        timeout=20,
        what="the newcomer joining",
        interval=0.02,
    )
    # At once, as a rolling update without a readiness gate does.
    await asyncio.to_thread(leader.stop)
    await publish(
        kafka_bootstrap, kit_topic, [make_event("item.created", "b", {}).to_json().encode()]
    )
    # Within a rebalance or two, not after CONSUMER_STUCK_AFTER (30 s) or never.
    await eventually(
        lambda: _handled(redis_client, newcomer),
        until=lambda n: n >= 2,
        timeout=20,
        what="the newcomer consuming after the leader left",
    )
