"""The Redis client every service uses, and its readiness probe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

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
    return Redis.from_pool(pool)


# Never sent in an automatic pipeline: they block the connection, or change its state.
_ALONE = frozenset(
    {
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
        "WAIT", "WAITAOF", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SELECT",
        "AUTH", "HELLO", "CLIENT", "CLIENT SETNAME", "QUIT", "RESET", "MULTI", "EXEC",
        "DISCARD", "WATCH", "UNWATCH", "SHUTDOWN", "SYNC", "PSYNC", "DEBUG",
    }
)  # fmt: skip


def _alone(args: tuple[Any, ...]) -> bool:
    name = str(args[0]).upper()
    if name in _ALONE:
        return True
    # XREAD / XREADGROUP ... BLOCK ms
    return name.startswith("XREAD") and any(
        a.upper() in (b"BLOCK", "BLOCK") for a in args[1:] if isinstance(a, str | bytes)
    )


class _TurnBatcher:
    """Collects work handed in during one turn of the event loop (and while the previous
    batch is on its way to Redis) and gives it to ``send`` as one batch. Each item's last
    element is the future its caller awaits; if the flushing task dies (cancelled with the
    loop), every waiting caller gets the error, so nobody waits forever."""

    def __init__(
        self,
        send: Callable[[list[Any]], Awaitable[None]],
        name: str,
        quiet: bool = False,
    ) -> None:
        self._send = send
        self._name = name
        self._quiet = quiet  # no instrumentation spans for the batches themselves
        self._queue: list[Any] = []
        self._flusher: asyncio.Task[None] | None = None

    def add(self, item: tuple[Any, ...]) -> None:
        self._queue.append(item)
        if self._flusher is None:
            # The task inherits the caller's context (and so its trace, if any).
            self._flusher = asyncio.create_task(self._flush(), name=self._name)

    async def _flush(self) -> None:
        try:
            with suppress_instrumentation() if self._quiet else contextlib.nullcontext():
                while self._queue:
                    await asyncio.sleep(0)  # what else is handed in this turn joins
                    batch, self._queue = self._queue, []
                    await self._send(batch)
        except BaseException as exc:
            for item in self._queue:
                if not item[-1].done():
                    item[-1].set_exception(exc)
            self._queue = []
            raise
        finally:
            self._flusher = None


class _ScriptCache:
    """The Lua scripts registered on one connection pool, kept in the server's script cache
    so that ``EVALSHA`` finds them: a miss (``NOSCRIPT``) is recorded as an error span by the
    redis instrumentation, in the trace of a request that was perfectly healthy.

    Every new connection loads them all in its handshake: a server that restarted (or was
    replaced) starts with an empty cache and is only reached through new connections. A
    script registered while connections are already open is loaded by
    :meth:`Redis.load_scripts` (the kit's readiness probe calls it) or, at the latest, just
    before its first call.
    """

    def __init__(self) -> None:
        self.sources: dict[str, Any] = {}  # sha1 -> source, in registration order
        self.unloaded: set[str] = set()  # registered since the last load
        self._lock: asyncio.Lock | None = None

    def add(self, sha: str, source: Any) -> None:
        if sha not in self.sources:
            self.sources[sha] = source
            self.unloaded.add(sha)

    async def on_connect(self, connection: AbstractConnection) -> None:
        """The handshake of a new connection (redis-py's ``redis_connect_func``): the usual
        one, then ``SCRIPT LOAD`` of every script, pipelined in one round trip."""
        await connection.on_connect()
        sources = list(self.sources.values())
        if not sources:
            return
        commands = [("SCRIPT", "LOAD", source) for source in sources]
        await connection.send_packed_command(connection.pack_commands(commands), False)
        for _ in sources:
            try:
                await connection.read_response()
            except ResponseError as exc:  # e.g. an ACL without SCRIPT: the call loads it then
                log.warning("cannot load a Lua script on a new Redis connection: %s", exc)

    async def load(self, client: aioredis.Redis, shas: Iterable[str] | None = None) -> None:
        """``SCRIPT LOAD`` the scripts not loaded yet (or ``shas``), in one pipeline."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent first calls wait for one load
            wanted = list(self.unloaded if shas is None else shas)
            if not wanted:
                return
            async with client.pipeline(transaction=False) as pipe:
                for sha in wanted:
                    pipe.script_load(self.sources[sha])
                await pipe.execute()
            self.unloaded.difference_update(wanted)


class _CachedScript(AsyncScript):
    """A script of the kit's client: loaded before its first ``EVALSHA``. If the server lost
    its cache anyway (``SCRIPT FLUSH`` by hand), every script is loaded again and the call
    retried, as redis-py does for one."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        target = self.registered_client if client is None else client
        if not isinstance(target, Redis):  # a pipeline: it loads its scripts itself
            return await super().__call__(keys, args, client)
        keys, args = list(keys or []), list(args or [])
        await target.load_scripts()
        try:
            return await target.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            log.warning("Redis lost its Lua scripts (SCRIPT FLUSH?): loading them again")
            await target.load_scripts(everything=True)
            return await target.evalsha(self.sha, len(keys), *keys, *args)


class Redis(aioredis.Redis):
    """``redis.asyncio.Redis`` with two savings, both invisible to callers:

    * Automatic pipelining: commands called while others are on their way to Redis are
      sent together, in one (non-transactional) pipeline, when those return (or at the next
      turn of the event loop). Each caller gets its own reply or error; a command costs the
      client a fraction of a round trip of its own, and many handlers or requests read at
      the same time. Blocking and connection-state commands are always sent alone.
    * No OpenTelemetry instrumentation when nothing would be recorded. The instrumentation
      formats every command (a pipeline: all of them) into a statement and starts a span
      before asking the sampler; under a trace that is not sampled (or no trace: parentless
      client spans are dropped) that is pure cost. Commands of a sampled trace are sent on
      their own, with their spans, as before.

    And Lua scripts from :meth:`register_script` that are in Redis before they are called,
    also after Redis restarted (:class:`_ScriptCache`), so ``EVALSHA`` never misses.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batcher = _TurnBatcher(self._send, "redis-auto-pipeline", quiet=True)
        self.pipelined = 0  # commands sent in an automatic pipeline
        self.pipelines = 0  # automatic pipelines sent
        # One script cache per pool, whichever client of it registers: the pool's
        # connections load the scripts when they connect.
        kwargs_of_pool = self.connection_pool.connection_kwargs
        hook = kwargs_of_pool.get("redis_connect_func")
        cache = getattr(hook, "__self__", None)
        if not isinstance(cache, _ScriptCache):
            cache = _ScriptCache()
            if hook is None:
                kwargs_of_pool["redis_connect_func"] = cache.on_connect
        self._scripts = cache

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        cached = _CachedScript(self, script)
        self._scripts.add(cached.sha, script)
        return cached

    async def load_scripts(self, everything: bool = False) -> None:
        """Load the registered scripts that are not loaded yet (``everything``: all of
        them, for a server that lost its cache); a no-op when there are none."""
        if everything:
            await self._scripts.load(self, list(self._scripts.sources))
        elif self._scripts.unloaded:
            await self._scripts.load(self)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if trace.get_current_span().is_recording():
            return await super().execute_command(*args, **options)
        if self.connection is not None or _alone(args):
            with suppress_instrumentation():
                return await super().execute_command(*args, **options)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batcher.add((args, options, future))
        return await future

    async def _send(
        self, batch: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]
    ) -> None:
        replies: list[Any]
        try:
            if len(batch) == 1:
                args, options, _ = batch[0]
                replies = [await super().execute_command(*args, **options)]
            else:
                pipe = Pipeline(self.connection_pool, self.response_callbacks, False, None)
                pipe.command_stack = [(args, options) for args, options, _ in batch]
                async with pipe:
                    replies = await pipe.execute(raise_on_error=False)
                self.pipelines += 1
                self.pipelined += len(batch)
        except (ResponseError, DataError) as exc:
            if len(batch) > 1:
                # An argument that cannot be encoded fails the packing of the whole pipeline,
                # before anything is sent: one at a time, so only its caller sees it.
                for one in batch:
                    await self._send([one])
                return
            replies = [exc]
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller gave up
            if isinstance(reply, RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class _Pipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if trace.get_current_span().is_recording():
            return await super().execute(raise_on_error)
        with suppress_instrumentation():
            return await super().execute(raise_on_error)


async def redis_ready(client: aioredis.Redis, timeout: float = 1.0) -> bool:
    """Redis answers and (for the kit's client) holds every registered script: an instance is
    not ready before its scripts are loaded."""

    async def ready() -> bool:
        if isinstance(client, Redis):
            await client.load_scripts()
        return bool(await client.ping())

    try:
        return await asyncio.wait_for(ready(), timeout)
    except (TimeoutError, RedisError, OSError):
        return False


class GroupCommit:
    """Executes many small ``MULTI``/``EXEC`` transactions as one: a group commit.

    ``await commits.execute(tx)`` instead of ``await tx.execute()``: the transactions handed
    in while one group is on its way to Redis are sent together, as ONE transaction, when it
    returns (or at the next turn of the event loop when none is). Every command of every
    transaction runs, atomically, in one round trip; each caller gets its own replies, or
    the first error among them, exactly as ``tx.execute()`` would give it. A Redis command
    costs the client far less inside a big pipeline than in a transaction of its own (about
    50 us against 250 us for a transaction of three), and under load many handlers finish
    within the same round trip.

    Isolation between callers is kept: a runtime error in one command (a script that fails)
    fails that command alone, in Redis as in the reply, so only its caller sees an error;
    an error that aborts a whole transaction (``EXECABORT``: a command that does not parse)
    makes the group run again one transaction at a time, so only the bad one fails.
    Unreachable Redis fails every caller of the group with the same error. A transaction
    that watches keys (or holds a connection) runs by itself.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._batcher = _TurnBatcher(self._commit, "redis-group-commit")
        self.groups = 0  # transactions sent to Redis (a group counts once)
        self.transactions = 0  # transactions handed in

    async def execute(self, tx: Pipeline) -> list[Any]:
        self.transactions += 1
        if tx.watching or tx.connection is not None or tx.explicit_transaction:
            self.groups += 1
            return await tx.execute()
        if not tx.command_stack:
            return []
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        # The flushing task inherits this caller's context: its Redis span (if traced)
        # goes with the first transaction of the group.
        self._batcher.add((tx, future))
        return await future

    async def _commit(self, group: list[tuple[Pipeline, asyncio.Future[list[Any]]]]) -> None:
        if len(group) == 1:
            await self._alone(*group[0])
            return
        combined = self._client.pipeline(transaction=True)
        # Sizes now: a caller that gives up (cancelled) resets its pipeline meanwhile.
        sizes = [len(tx.command_stack) for tx, _ in group]
        for tx, _ in group:
            combined.command_stack.extend(tx.command_stack)
            combined.scripts.update(tx.scripts)
        self.groups += 1
        try:
            async with combined:
                replies = await combined.execute(raise_on_error=False)
        except (ResponseError, DataError):
            # A command that does not even queue (EXECABORT), or an argument that cannot be
            # encoded, fails the whole transaction before anything ran. One at a time, so
            # only its own caller fails.
            for tx, future in group:
                await self._alone(tx, future)
            return
        except BaseException as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for (_, future), size in zip(group, sizes, strict=True):
            mine, start = replies[start : start + size], start + size
            if future.done():
                continue  # its caller gave up (cancelled): the effects are stored anyway
            error = next((r for r in mine if isinstance(r, ResponseError)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)

    async def _alone(self, tx: Pipeline, future: asyncio.Future[list[Any]]) -> None:
        self.groups += 1
        try:
            result = await tx.execute()
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not future.done():
            future.set_result(result)
