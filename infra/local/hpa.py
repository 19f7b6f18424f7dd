"""The Kubernetes HorizontalPodAutoscaler algorithm (autoscaling/v2), as pure arithmetic.

For each metric: ``desired = ceil(current * value / target)``, unless ``value / target`` is
within the tolerance of 1 (then nothing changes); several metrics: the highest wins. Then, as
the HPA controller does, in this order:

1. stabilization: the recommendation actually used is the lowest of the scale-up window and
   the highest of the scale-down window (a dip in load does not remove replicas at once);
2. scaling policies: at most ``value`` pods (or percent) added or removed per ``period``,
   counted from the replicas at the start of that period; ``select`` picks the policy that
   allows the biggest change (max), the smallest (min), or none (disabled);
3. min and max replicas.

Time comes from an injected clock so tests can step it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infra.local.catalog import AutoscaleSpec, RulesSpec
from infra.runtime.models import MetricReading, ScaleDecision

# "No policy limits this direction" (a policy list may be empty).
UNLIMITED = 1_000_000


@dataclass(frozen=True)
class _Timed:
    at: float
    value: int


def metric_desired(current: int, value: float, target: float, tolerance: float) -> int:
    """One metric's recommendation (the HPA formula with its tolerance band)."""
    ratio = value / target
    # The epsilon keeps a ratio of exactly 1.1 inside a 0.1 band despite float rounding.
    if abs(ratio - 1.0) <= tolerance + 1e-9:
        return current
    return max(math.ceil(ratio * current), 0)


class Hpa:
    def __init__(self, spec: AutoscaleSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self._recommendations: list[_Timed] = []
        self._events: list[_Timed] = []  # replicas added (>0) or removed (<0), when

    def reset(self) -> None:
        self._recommendations.clear()
        self._events.clear()

    def window_left(self) -> float | None:
        """Seconds until the scale-down window stops holding the replicas above the latest
        recommendation (``None`` when it holds nothing): when a lower count can apply."""
        if not self._recommendations:
            return None
        latest = self._recommendations[-1].value
        higher = [r.at for r in self._recommendations if r.value > latest]
        if not higher:
            return None
        left = max(higher) + self.spec.scale_down.stabilization - self.clock()
        return round(left, 1) if left > 0 else None

    # -- the steps ---------------------------------------------------------------------------
    def _stabilize(self, now: float, current: int, raw: int) -> int:
        up_window = self.spec.scale_up.stabilization
        down_window = self.spec.scale_down.stabilization
        self._recommendations.append(_Timed(now, raw))
        horizon = now - max(up_window, down_window)
        self._recommendations = [r for r in self._recommendations if r.at >= horizon]
        up = min(r.value for r in self._recommendations if r.at >= now - up_window)
        down = max(r.value for r in self._recommendations if r.at >= now - down_window)
        # Scale up only as far as the whole up-window agrees, down only as far as the
        # whole down-window agrees.
        recommendation = current
        if recommendation < up:
            recommendation = up
        if recommendation > down:
            recommendation = down
        return recommendation

    def _changes(self, now: float, period: float) -> tuple[int, int]:
        added = sum(e.value for e in self._events if e.value > 0 and e.at > now - period)
        removed = -sum(e.value for e in self._events if e.value < 0 and e.at > now - period)
        return added, removed

    def _limit(self, now: float, current: int, rules: RulesSpec, up: bool) -> int:
        """The furthest the policies let the replicas go in this direction right now."""
        if rules.select == "disabled":
            return current
        if not rules.policies:
            return UNLIMITED if up else 0
        proposals = []
        for policy in rules.policies:
            added, removed = self._changes(now, policy.period)
            start = current - added + removed
            if up:
                proposed = (
                    start + policy.value
                    if policy.type == "pods"
                    else math.ceil(start * (1 + policy.value / 100))
                )
            else:
                proposed = (
                    start - policy.value
                    if policy.type == "pods"
                    else math.floor(start * (1 - policy.value / 100))
                )
            proposals.append(proposed)
        # "max" = the policy allowing the biggest change: the highest limit going up, the
        # lowest going down.
        biggest = max(proposals) if up else min(proposals)
        smallest = min(proposals) if up else max(proposals)
        return biggest if rules.select == "max" else smallest

    # -- one decision ------------------------------------------------------------------------
    def decide(
        self, service: str, current: int, readings: Sequence[MetricReading]
    ) -> ScaleDecision:
        """Compute (and remember) one decision; ``readings`` carry per-replica values."""
        now = self.clock()
        spec = self.spec
        measured = [r for r in readings if r.value is not None]
        for reading in measured:
            assert reading.value is not None
            reading.ratio = round(reading.value / reading.target, 4)
            reading.desired = metric_desired(current, reading.value, reading.target, spec.tolerance)
        up_limit = self._limit(now, current, spec.scale_up, up=True)
        down_limit = self._limit(now, current, spec.scale_down, up=False)
        if not measured:
            reason = "no metrics: keeping the current replicas"
            limits = (up_limit, down_limit)
            return self._decision(
                now, service, current, readings, current, current, limits, current, reason
            )
        raw = max(r.desired for r in measured if r.desired is not None)
        stabilized = self._stabilize(now, current, raw)
        if stabilized > current:
            desired = min(stabilized, up_limit, spec.max)
            reason = "scale up"
            if desired < stabilized:
                reason += f" (limited to {desired} by the scale-up policy or max)"
        elif stabilized < current:
            desired = max(stabilized, down_limit, spec.min)
            reason = "scale down"
            if desired > stabilized:
                reason += f" (limited to {desired} by the scale-down policy or min)"
        else:
            desired = current
            if raw == current:
                reason = "within tolerance: no change"
            else:
                window = "down" if raw < current else "up"
                reason = f"held by the scale-{window} stabilization window (raw {raw})"
        desired = min(max(desired, spec.min), spec.max)
        if desired != current:
            self._events.append(_Timed(now, desired - current))
            horizon = now - max(
                (p.period for p in (*spec.scale_up.policies, *spec.scale_down.policies)),
                default=0.0,
            )
            self._events = [e for e in self._events if e.at > horizon]
        limits = (up_limit, down_limit)
        return self._decision(
            now, service, current, readings, raw, stabilized, limits, desired, reason
        )

    def _decision(
        self,
        now: float,
        service: str,
        current: int,
        readings: Sequence[MetricReading],
        raw: int,
        stabilized: int,
        limits: tuple[int, int],
        desired: int,
        reason: str,
    ) -> ScaleDecision:
        return ScaleDecision(
            at=time.time(),
            service=service,
            current=current,
            metrics=list(readings),
            raw_desired=raw,
            stabilized=stabilized,
            up_limit=limits[0],
            down_limit=max(limits[1], 0),
            desired=desired,
            min_replicas=self.spec.min,
            max_replicas=self.spec.max,
            reason=reason,
        )
