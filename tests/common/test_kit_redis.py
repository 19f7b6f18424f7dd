"""The kit's Redis client on a real Redis: automatic pipelining and group commits give each
caller exactly its own replies and errors, whatever else was sent with them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import DataError, ResponseError

from services.common.redis import REDIS_UNAVAILABLE, GroupCommit, Redis, create_redis, redis_ready


@pytest.fixture
async def kit_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    assert isinstance(client, Redis)
    yield client
    await client.aclose()


@pytest.fixture
def ns() -> str:
    return f"kit-redis:{uuid.uuid4().hex}"


async def test_concurrent_commands_share_a_pipeline_each_with_its_own_reply(
    kit_redis: Redis, ns: str
) -> None:
    await kit_redis.set(f"{ns}:text", "hello")
    await kit_redis.hset(f"{ns}:hash", mapping={"a": "1"})
    before = kit_redis.pipelines
    replies = await asyncio.gather(
        kit_redis.get(f"{ns}:text"),
        kit_redis.incr(f"{ns}:text"),  # not an integer: this caller alone gets the error
        kit_redis.hgetall(f"{ns}:hash"),
        kit_redis.set(f"{ns}:n", 7),
        kit_redis.get(f"{ns}:missing"),
        return_exceptions=True,
    )
    assert replies[0] == "hello"
    assert isinstance(replies[1], ResponseError)
    assert replies[2:] == [{"a": "1"}, True, None]
    assert kit_redis.pipelines == before + 1


async def test_an_argument_that_cannot_be_encoded_fails_only_its_caller(
    kit_redis: Redis, ns: str
) -> None:
    replies = await asyncio.gather(
        kit_redis.set(f"{ns}:a", "1"),
        kit_redis.set(f"{ns}:b", None),  # type: ignore[arg-type]
        kit_redis.get(f"{ns}:a"),
        return_exceptions=True,
    )
    assert replies[0] is True
    assert isinstance(replies[1], DataError)
    assert replies[2] == "1"


async def test_scripts_reload_after_a_flushed_cache_in_a_pipeline(kit_redis: Redis) -> None:
    script = kit_redis.register_script("return ARGV[1]")
    await kit_redis.script_flush()
    replies = await asyncio.gather(script(args=["a"]), script(args=["b"]))
    assert replies == ["a", "b"]


async def test_readiness_loads_the_scripts_so_no_call_misses_its_script(redis_server: Any) -> None:
    # A server of this test alone: its script cache starts empty, as after any start.
    client = create_redis(redis_server.url)
    try:
        script = client.register_script("return 'first'")
        assert await redis_ready(client)
        assert await client.script_exists(script.sha) == [True]
        assert await script() == "first"
        # Registered after readiness: its first call loads it before running it.
        later = client.register_script("return 'later'")
        assert await later() == "later"
    finally:
        await client.aclose()
    assert redis_server.errors("NOSCRIPT") == 0


async def test_scripts_are_loaded_again_when_redis_restarts(redis_server: Any) -> None:
    client = create_redis(redis_server.url)
    try:
        script = client.register_script("return ARGV[1]")
        assert await script(args=["before"]) == "before"
        redis_server.restart()  # a real restart: connections and script cache are gone
        assert await script(args=["after"]) == "after"
    finally:
        await client.aclose()
    assert redis_server.errors("NOSCRIPT") == 0  # counted since the restart


async def test_a_blocking_read_never_holds_up_other_commands(kit_redis: Redis, ns: str) -> None:
    blocked = asyncio.create_task(kit_redis.xread({f"{ns}:stream": "$"}, block=2000))
    await asyncio.sleep(0)  # the XREAD is on its way
    started = time.monotonic()
    assert await kit_redis.set(f"{ns}:k", "v") is True
    assert time.monotonic() - started < 1.0
    await kit_redis.xadd(f"{ns}:stream", {"f": "v"})
    assert await asyncio.wait_for(blocked, 5)


async def _transaction(
    client: Redis, commits: GroupCommit, ns: str, n: int, bad: str = ""
) -> list[Any]:
    async with client.pipeline(transaction=True) as tx:
        tx.set(f"{ns}:t{n}", n)
        if bad == "runtime":
            tx.incr(f"{ns}:text")  # fails when it runs; the rest of the transaction runs
        elif bad == "abort":
            tx.execute_command("SET")  # does not queue: EXECABORT
        tx.get(f"{ns}:t{n}")
        return await commits.execute(tx)


async def test_group_commit_gives_each_transaction_its_replies_and_errors(
    kit_redis: Redis, ns: str
) -> None:
    await kit_redis.set(f"{ns}:text", "hello")
    commits = GroupCommit(kit_redis)
    replies = await asyncio.gather(
        _transaction(kit_redis, commits, ns, 1),
        _transaction(kit_redis, commits, ns, 2, "runtime"),
        _transaction(kit_redis, commits, ns, 3),
        return_exceptions=True,
    )
    assert replies[0] == [True, "1"]
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == [True, "3"]
    assert (commits.transactions, commits.groups) == (3, 1)
    # Like a transaction of its own: a runtime error does not undo the other commands.
    assert await kit_redis.get(f"{ns}:t2") == "2"


async def test_a_transaction_that_aborts_makes_the_group_run_one_by_one(
    kit_redis: Redis, ns: str
) -> None:
    commits = GroupCommit(kit_redis)
    replies = await asyncio.gather(
        _transaction(kit_redis, commits, ns, 1),
        _transaction(kit_redis, commits, ns, 2, "abort"),
        _transaction(kit_redis, commits, ns, 3),
        return_exceptions=True,
    )
    assert replies[0] == [True, "1"]
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == [True, "3"]
    assert await kit_redis.get(f"{ns}:t2") is None  # nothing of the aborted one ran


async def test_group_commit_reports_redis_being_away_to_every_caller() -> None:
    client = create_redis("redis://127.0.0.1:1/0", socket_timeout=0.5, connect_timeout=0.5)
    commits = GroupCommit(client)
    try:
        replies = await asyncio.gather(
            *(_transaction(client, commits, "away", n) for n in range(3)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    assert all(isinstance(r, REDIS_UNAVAILABLE) for r in replies), replies
