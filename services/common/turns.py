"""Work that one replica of a service does at a time: every interval, whoever takes the turn.

:class:`TurnLoop` calls a job every ``interval`` on the replica that takes the turn: a Redis
key set with ``NX`` and an expiry of one interval, never released, so that about one job runs
per interval across all replicas, whichever of them are alive. Redis being away, or a bug in
the job, is logged and the next turn tries again. The saga re-drive
(``kafka/redrive.py``) and inventory's restock run on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.backoff import sleep_unless
from services.common.redis import REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class TurnLoop:
    """Calls ``job`` every ``interval`` on one replica at a time, until stopped; ``name``
    says what it does in the log."""

    def __init__(
        self,
        redis: aioredis.Redis,
        job: Job,
        *,
        lock_key: str,
        owner: str,
        interval: float,
        name: str,
    ) -> None:
        self._redis = redis
        self._job = job
        self._lock_key = lock_key
        self._owner = owner
        self._interval = interval
        self._name = name
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"turns-{self._lock_key}")

    async def stop(self) -> None:
        """Let the job in progress finish (keep it short), then stop."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if await self._take_turn():
                    await self._job()
            except (RedisError, *REDIS_UNAVAILABLE) as exc:
                log.warning("%s: redis unavailable: %s; trying again", self._name, exc)
            except Exception:  # a bug must not end the loop: log it, the next turn tries again
                log.exception("%s failed", self._name)
            if await sleep_unless(self._stop, self._interval):
                return

    async def _take_turn(self) -> bool:
        """One job per interval across all replicas: the lock is never released, it expires
        after the interval. A job that outlives it can overlap the next one, so a job must
        be safe to run twice at once."""
        millis = max(int(self._interval * 1000), 1)
        return bool(await self._redis.set(self._lock_key, self._owner, nx=True, px=millis))
