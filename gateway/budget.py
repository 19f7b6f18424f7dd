"""A retry budget: retries may add at most a share of recent traffic (as Linkerd and Envoy do).

Without one, retries multiply load exactly when upstreams are failing. Each request deposits
``ratio`` of a token, a floor of ``min_per_second`` tokens arrives every second so a quiet
gateway can still retry, and each retry spends one whole token.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = max(1.0, min_per_second * window)
        self.clock = clock
        self.tokens = self.capacity
        self._last = clock()
        self.spent = 0
        self.refused = 0

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.min_per_second)
        self._last = now

    def record_request(self) -> None:
        self._refill()
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def try_spend(self) -> bool:
        self._refill()
        if self.tokens >= 1.0 - 1e-9:  # 5 x 0.2 must buy one retry despite rounding
            self.tokens -= 1.0
            self.spent += 1
            return True
        self.refused += 1
        return False
