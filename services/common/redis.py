"""The Redis client every service uses, and its readiness probe."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors that mean "Redis is not reachable right now", as opposed to a bad command.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def create_redis(
    url: str,
    *,
    max_connections: int = 128,
    socket_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    client_name: str | None = None,
) -> aioredis.Redis:
    """A client over a bounded, blocking pool: a burst waits for a free connection (up to
    ``socket_timeout``) instead of opening thousands of sockets. Strings in and out.

    ``socket_timeout`` must exceed the longest blocking command (the outbox relay blocks for
    one second at most).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=True,
        client_name=client_name,
    )
    return aioredis.Redis.from_pool(pool)


async def redis_ready(client: aioredis.Redis, timeout: float = 1.0) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except (TimeoutError, RedisError, OSError):
        return False
