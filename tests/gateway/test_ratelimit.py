"""The Redis token bucket, shared by two gateway replicas, with local leases."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from gateway.ratelimit import RateLimiter


async def test_two_replicas_share_one_bucket(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        replicas = [RateLimiter(client, capacity=50, per_second=200) for _ in range(2)]
        assert replicas[0].lease_size == 10
        key = uuid.uuid4().hex
        decisions = [await replicas[n % 2].check(key) for n in range(100)]
        allowed = sum(d.allowed for d in decisions)
        # The burst (50) plus what refilled while the loop ran; never the 100 asked for.
        assert 50 <= allowed <= 70, allowed
        refused = [d for d in decisions if not d.allowed]
        assert refused and all(d.retry_after_s == 1 for d in refused)
        assert await client.exists(RateLimiter.key_for(key))
        assert not await client.exists("mesh:ratelimit:" + key)  # only a digest is stored
    finally:
        await client.aclose()


async def test_small_limits_are_exact(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        limiter = RateLimiter(client, capacity=3, per_second=0.5)
        assert limiter.lease_size == 1
        key = uuid.uuid4().hex
        decisions = [await limiter.check(key) for _ in range(5)]
        assert [d.allowed for d in decisions] == [True, True, True, False, False]
        assert decisions[-1].retry_after_s == 2  # one token every two seconds
    finally:
        await client.aclose()


async def test_concurrent_requests_share_one_lease_request(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        limiter = RateLimiter(client, capacity=1000, per_second=400)
        calls = 0
        script = limiter._script

        async def counting(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return await script(*args, **kwargs)  # type: ignore[arg-type]

        limiter._script = counting  # type: ignore[assignment]
        key = uuid.uuid4().hex
        decisions = await asyncio.gather(*(limiter.check(key) for _ in range(100)))
        assert all(d.allowed for d in decisions)
        assert calls == 5  # 100 requests / leases of 20, not one call per waiting request
    finally:
        await client.aclose()
