"""Per-API-key rate limiting: a token bucket kept in Redis, shared by every gateway replica.

The bucket lives in one Redis hash and is updated by a Lua script, so check-and-take is atomic
and uses Redis's clock (gateway replicas may disagree about time; Redis does not). A replica
takes a lease of tokens at a time (a twentieth of a second's worth, at most half the burst)
and spends it locally, so a busy key costs a Redis round trip per lease instead of per
request; an unspent lease lapses after a second, which errs on the strict side.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from opentelemetry.instrumentation.utils import suppress_instrumentation

# KEYS[1] bucket; ARGV: capacity, refill per second, most tokens wanted.
# Returns {granted, retry_after_ms}: between 1 and the wanted tokens, or 0 and when to retry.
_TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local granted = 0
local retry_after = 0
if tokens >= 1 then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
else
  retry_after = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {granted, retry_after}
"""
LEASE_SECONDS = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int  # whole seconds for the Retry-After header (at least 1 when refused)


ALLOWED = Decision(True, 0)  # one instance: the common answer costs no allocation


@dataclass
class _Lease:
    tokens: int
    until: float


class RateLimiter:
    def __init__(self, client: aioredis.Redis, capacity: float, per_second: float) -> None:
        self.client = client
        self.capacity = capacity
        self.per_second = per_second
        self.lease_size = int(max(1, min(per_second / 20, capacity / 2)))
        self._script = client.register_script(_TOKEN_BUCKET)
        self._leases: dict[str, _Lease] = {}
        # One lease request per key at a time: concurrent requests wait for it instead of
        # all asking Redis at once when a lease runs out.
        self._pending: dict[str, asyncio.Future[None]] = {}

    @staticmethod
    def key_for(api_key: str) -> str:
        # The key itself is a secret: only a digest of it is written to Redis.
        return "mesh:ratelimit:" + hashlib.sha256(api_key.encode()).hexdigest()[:32]

    def take_local(self, api_key: str) -> bool:
        """Spend a token of this replica's lease, if it holds one (no Redis, no await)."""
        lease = self._leases.get(api_key)
        if lease is not None and lease.tokens > 0 and time.monotonic() < lease.until:
            lease.tokens -= 1
            return True
        return False

    async def check(self, api_key: str) -> Decision:
        while True:
            if self.take_local(api_key):
                return ALLOWED
            pending = self._pending.get(api_key)
            if pending is None:
                break
            await asyncio.shield(pending)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[api_key] = future
        try:
            # The limiter's own Redis calls are plumbing, not part of the client's trace.
            with suppress_instrumentation():
                granted, retry_ms = await self._script(
                    keys=[self.key_for(api_key)],
                    args=[self.capacity, self.per_second, self.lease_size],
                )
        finally:
            del self._pending[api_key]
            future.set_result(None)
        if int(granted) >= 1:
            self._leases[api_key] = _Lease(int(granted) - 1, time.monotonic() + LEASE_SECONDS)
            return ALLOWED
        return Decision(False, max(1, math.ceil(int(retry_ms) / 1000)))
