"""The saga re-drive: a step that waits for an answer announces its question again.

A broker that loses events it had acknowledged (tansu with memory storage, when it restarts)
leaves saga steps waiting forever: the outbox only covers events the broker never took. The
standard answer is a re-drive: whoever waits for an answer keeps a Redis index of what waits
(a sorted set, member = order id, score = when it is due to be announced again, kept in the
same transactions as the state), and announces it again when it is due, under a NEW event id
(the processed markers would skip the old one), through the outbox. Every stage answers such
a re-announcement by replaying the outcome it recorded, so nothing happens twice.

The kit gives the two generic parts; a service keeps its index and builds its events:

* :func:`stage_redrive` queues, on one transaction, the Lua script that re-announces one
  waiting record if it still waits (else only drops it from the index) and pushes its next
  due time back: ``after``, then doubling, capped at ``cap``;
* :class:`RedriveLoop` runs a service's sweep every interval on ONE replica at a time (a
  Redis lock with expiry), counts ``saga_redrives_total`` and logs each sweep that
  re-announced something.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline

from services.common.metrics import Metrics
from services.common.turns import TurnLoop

log = logging.getLogger(__name__)

# Re-announces a record that still waits and schedules the next time; a record that no longer
# waits (or is gone) only leaves the index. The state is checked here, atomically, not in the
# sweep's earlier read. The n-th re-announcement waits after * 2^(n-1), at most cap; a record
# that waits but could not be announced (no entry) is scheduled the same way, so it cannot
# keep the head of the index.
# KEYS: record (hash), index, outbox. ARGV: field, waiting value, member, now, after, cap,
# then the outbox entry's field/value pairs (none: nothing to announce).
_REDRIVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
local n = redis.call('HINCRBY', KEYS[1], 'redrives', 1)
local wait = math.min(tonumber(ARGV[5]) * 2 ^ (n - 1), tonumber(ARGV[6]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + wait, ARGV[3])
if #ARGV < 7 then
  return 0
end
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 7))
return 1
"""


@dataclass(frozen=True)
class Waiting:
    """A record that may still wait for an answer: the hash ``key`` waits while its
    ``field`` equals ``value``; ``member`` is its id in the index."""

    key: str
    field: str
    value: str
    member: str


async def due(redis: aioredis.Redis, index: str, now: float, limit: int) -> list[str]:
    """Members of ``index`` due at ``now`` (unix seconds), the most overdue first."""
    return cast(list[str], await redis.zrangebyscore(index, "-inf", now, start=0, num=limit))


def stage_redrive(
    tx: Pipeline,
    index: str,
    record: Waiting,
    outbox_key: str,
    entry: Mapping[str, str] | None,
    *,
    now: float,
    after: float,
    cap: float,
) -> None:
    """Queue the re-announcement of ``record`` (the outbox ``entry``, if it still waits) on
    ``tx``; with no ``entry`` (nothing to announce), a record that no longer waits only leaves
    ``index`` and one that still waits is scheduled for later.

    EVAL, not EVALSHA: inside MULTI a NOSCRIPT error (script cache flushed by a restart) would
    fail this command alone.
    """
    pairs = [item for pair in (entry or {}).items() for item in pair]
    keys = (record.key, index, outbox_key)
    args: list[str | float] = [record.field, record.value, record.member, now, after, cap]
    tx.eval(_REDRIVE, len(keys), *keys, *args, *pairs)


Sweep = Callable[[], Awaitable[int]]


class RedriveLoop:
    """Calls ``sweep`` (which returns how many records it re-announced) every ``interval``
    on one replica at a time (a :class:`~services.common.turns.TurnLoop`), until stopped.

    A sweep that outlives its turn can overlap the next one; that announces some records
    twice, which costs duplicates on the wire and nothing else."""

    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: Metrics,
        sweep: Sweep,
        *,
        lock_key: str,
        owner: str,
        interval: float,
        what: str,
    ) -> None:
        self._metrics = metrics
        self._sweep = sweep
        self._what = what
        self._redrives = Counter(
            "saga_redrives_total",
            "Saga steps announced again because no answer came (new event id, same data).",
            ("service", "version"),
            registry=metrics.registry,
        )
        self._turns = TurnLoop(
            redis,
            self._turn,
            lock_key=lock_key,
            owner=owner,
            interval=interval,
            name="saga re-drive",
        )

    def start(self) -> None:
        self._turns.start()

    async def stop(self) -> None:
        """Let the sweep in progress finish (one short transaction), then stop."""
        await self._turns.stop()

    async def _turn(self) -> None:
        count = await self._sweep()
        if count:
            self._metrics.child(self._redrives).inc(count)
            log.info(
                "saga re-drive: announced %d %s again",
                count,
                self._what,
                extra={"redriven": count},
            )
