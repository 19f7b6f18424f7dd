"""Per-API-key rate limiting: a token bucket kept in Redis, shared by every gateway replica.

The bucket lives in one Redis hash and is updated by a Lua script, so check-and-take is atomic
and uses Redis's clock (gateway replicas may disagree about time; Redis does not).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1] bucket; ARGV: capacity, refill per second, cost. Returns {allowed, retry_after_ms}.
_TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local retry_after = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, retry_after}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int  # whole seconds for the Retry-After header (at least 1 when refused)


class RateLimiter:
    def __init__(self, client: aioredis.Redis, capacity: float, per_second: float) -> None:
        self.client = client
        self.capacity = capacity
        self.per_second = per_second
        self._script = client.register_script(_TOKEN_BUCKET)

    @staticmethod
    def key_for(api_key: str) -> str:
        # The key itself is a secret: only a digest of it is written to Redis.
        return "mesh:ratelimit:" + hashlib.sha256(api_key.encode()).hexdigest()[:32]

    async def check(self, api_key: str, cost: float = 1.0) -> Decision:
        allowed, retry_ms = await self._script(
            keys=[self.key_for(api_key)], args=[self.capacity, self.per_second, cost]
        )
        if int(allowed):
            return Decision(True, 0)
        return Decision(False, max(1, math.ceil(int(retry_ms) / 1000)))
