"""Live notifications for Server-Sent Events, across instances.

Every notification is added to the Redis stream ``notifications:feed`` when it is recorded
(by whichever instance consumed the event). Each instance runs ONE reader that follows the
stream with a blocking ``XREAD`` and hands every entry to the SSE clients connected to it, so
a client on instance B sees what instance A recorded, and a thousand clients cost one Redis
connection, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from services.common.backoff import Backoff, sleep_unless
from services.common.redis import REDIS_UNAVAILABLE
from services.notifications.models import Notification
from services.notifications.store import FEED_KEY

log = logging.getLogger(__name__)

# Entries a client may fall behind by before it is cut off (it resumes with Last-Event-ID).
QUEUE_SIZE = 1000
# At most this many entries are replayed to a client resuming with Last-Event-ID.
MAX_REPLAY = 1000


@dataclass(frozen=True)
class FeedEntry:
    id: str  # the stream id, sent as the SSE event id
    notification: Notification


def entry_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


class Subscription:
    """One client's queue. ``None`` in the queue means: the stream is over."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FeedEntry | None] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, entry: FeedEntry) -> bool:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.end()
            return False
        return True

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Feed:
    def __init__(self, block_ms: int = 1000) -> None:
        self._block_ms = block_ms
        self._redis: aioredis.Redis | None = None
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._task = asyncio.create_task(self._run(), name="notifications-feed")

    async def close(self) -> None:
        """End every open stream (draining) and refuse new ones."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()

    async def stop(self) -> None:
        await self.close()
        self._stop.set()
        if self._task is not None:
            # Cut the blocking read short; its connection is dropped, which is fine now.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        if self._closed:
            subscription.end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def since(self, last_id: str) -> list[FeedEntry]:
        """Entries after ``last_id`` still in the stream (for a client that reconnects)."""
        assert self._redis is not None
        reply: Any = await self._redis.xrange(FEED_KEY, f"({last_id}", "+", count=MAX_REPLAY)
        return _parse(reply)

    async def _run(self) -> None:
        assert self._redis is not None
        backoff = Backoff(base=0.2, cap=5.0)
        last_id: str | None = None
        while not self._stop.is_set():
            try:
                if last_id is None:
                    # Start after what exists now: "$" in a loop could skip entries added
                    # between two reads.
                    newest: Any = await self._redis.xrevrange(FEED_KEY, "+", "-", count=1)
                    last_id = newest[0][0] if newest else "0-0"
                reply: Any = await self._redis.xread(
                    {FEED_KEY: last_id}, count=500, block=self._block_ms
                )
            except (RedisError, *REDIS_UNAVAILABLE) as exc:
                delay = backoff.next()
                log.warning("notifications feed: %s; retrying in %.2fs", exc, delay)
                await sleep_unless(self._stop, delay)
                continue
            backoff.reset()
            if not reply:
                continue
            entries = _parse(reply[0][1])
            if reply[0][1]:
                last_id = reply[0][1][-1][0]
            for entry in entries:
                for subscription in list(self._subscriptions):
                    if not subscription.offer(entry):
                        log.warning("an SSE client fell behind; its stream was ended")
                        self._subscriptions.discard(subscription)


def _parse(raw_entries: list[tuple[str, dict[str, str]]]) -> list[FeedEntry]:
    entries = []
    for entry_id, fields in raw_entries:
        try:
            notification = Notification.model_validate_json(fields["notification"])
        except (KeyError, ValidationError):
            log.warning("skipping a malformed feed entry", extra={"entry_id": entry_id})
            continue
        entries.append(FeedEntry(entry_id, notification))
    return entries
