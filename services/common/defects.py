"""Defects a release can be built with on purpose, for the lessons: all off by default.

A version file (``infra/versions/<service>-<version>.env``) turns them on:

- ``WARMUP_SECONDS``: the instance needs this long after it starts listening to warm up, as
  a cold cache or a JIT does. Until then ``/readyz`` answers 503 ``warming`` and every other
  request waits for the warm-up to end before it is handled: very slow, and a failure
  wherever the caller's timeout is shorter.
- ``LEAK_BYTES_PER_REQUEST``: every request keeps that many bytes for ever, like a cache
  that never evicts: memory grows steadily under load, never at rest. Bounded by
  ``LEAK_MAX_BYTES`` so that even a forgotten leaky release stops somewhere.

Probes, metrics and the OpenAPI document are exempt (they are not load).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common.faults import FAULT_EXEMPT_PATHS


class Warmup:
    """When the instance is warm: ``seconds`` after :meth:`start` (it started listening)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.warm = asyncio.Event()
        self.warm_at: float | None = None
        if seconds <= 0:
            self.warm.set()

    def start(self) -> None:
        if self.warm.is_set() or self.warm_at is not None:
            return
        self.warm_at = time.monotonic() + self.seconds
        asyncio.get_running_loop().call_later(self.seconds, self.warm.set)

    @property
    def remaining(self) -> float:
        if self.warm.is_set() or self.warm_at is None:
            return 0.0
        return max(0.0, self.warm_at - time.monotonic())


class Leak:
    """Memory kept for ever, ``per_request`` bytes at a time, at most ``limit`` in all."""

    def __init__(self, per_request: int, limit: int) -> None:
        self.per_request = per_request
        self.limit = limit
        self.kept: list[bytes] = []
        self.total = 0

    def take(self) -> None:
        if self.per_request <= 0 or self.total + self.per_request > self.limit:
            return
        # Filled, not zeroed: zero pages from calloc are not resident until written.
        self.kept.append(b"\xa5" * self.per_request)
        self.total += self.per_request


def defects_middleware(warmup: Warmup, leak: Leak) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in FAULT_EXEMPT_PATHS:
            return await handler(request)
        if not warmup.warm.is_set():
            await warmup.warm.wait()
        leak.take()
        return await handler(request)

    return middleware
