"""Choosing an upstream instance: version weights, pinning, load balancing and ejection.

Per routed service the gateway keeps one :class:`Pool` of the instances Consul reports
passing. A request picks a version first (``X-Mesh-Version`` pin, else the traffic weights by
smooth weighted round-robin, so 90/10 means exactly 9 in 10), then an instance of that version
(least outstanding requests, or round-robin), skipping instances that passive outlier
detection has ejected -- unless so few are left that the pool is in panic (below).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from services.common.net import host_port

Strategy = Literal["least_outstanding", "round_robin"]


@dataclass(frozen=True)
class OutlierPolicy:
    """Consecutive failures eject an instance for a backoff that doubles on each ejection."""

    consecutive_failures: int = 5
    base_ejection: float = 1.0
    max_ejection: float = 30.0
    # Never eject more than this share of a pool (at least one instance may always go).
    max_ejected_percent: int = 50
    # Envoy's healthy panic threshold: when fewer than this share of a pool's instances are
    # not ejected, route to all of them. Ejecting a lone instance that answers slowly under a
    # spike only turns slow answers into 503s for every request (and the backoff doubles).
    panic_threshold_percent: int = 50


@dataclass(eq=False)
class Instance:
    id: str
    address: str
    port: int
    version: str
    outstanding: int = 0
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    ejections: int = 0
    ejected_until: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @functools.cached_property
    def host_line(self) -> bytes:
        """The ``Host`` header line of a request to this instance, encoded once."""
        return f"Host: {host_port(self.address, self.port)}\r\n".encode()

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "address": f"{self.address}:{self.port}",
            "version": self.version,
            "outstanding": self.outstanding,
            "requests": self.requests,
            "failures": self.failures,
            "ejections": self.ejections,
            "ejected_for_s": round(max(0.0, self.ejected_until - now), 3),
        }


@dataclass
class _VersionPicker:
    """Smooth weighted round-robin (as nginx does for upstream weights): exact proportions."""

    current: dict[str, int] = field(default_factory=dict)

    def pick(self, weights: Mapping[str, int]) -> str:
        total = sum(weights.values())
        best = ""
        for version, weight in sorted(weights.items()):
            self.current[version] = self.current.get(version, 0) + weight
            if not best or self.current[version] > self.current[best]:
                best = version
        self.current[best] -= total
        return best


class Pool:
    """The passing instances of one service and their load and outlier state."""

    def __init__(
        self,
        service: str,
        *,
        strategy: Strategy = "least_outstanding",
        policy: OutlierPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.strategy: Strategy = strategy
        self.policy = policy or OutlierPolicy()
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        # The instances in id order (ties rotate in that order), kept for the dict they came from.
        self._ordered: list[Instance] = []
        self._ordered_from: dict[str, Instance] | None = None
        self._versions = _VersionPicker()
        self._rr = 0
        self.panics = 0  # choices made in panic, ejections ignored

    def replace(self, found: Iterable[tuple[str, str, int, str]]) -> None:
        """Set the instance list from discovery, keeping the state of instances that stay."""
        fresh: dict[str, Instance] = {}
        for instance_id, address, port, version in found:
            old = self.instances.get(instance_id)
            if old and (old.address, old.port, old.version) == (address, port, version):
                fresh[instance_id] = old
            else:
                fresh[instance_id] = Instance(instance_id, address, port, version)
        self.instances = fresh

    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances.values():
            counts[inst.version] = counts.get(inst.version, 0) + 1
        return counts

    def choose(
        self,
        weights: Mapping[str, int] | None = None,
        pinned: str | None = None,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> Instance | None:
        now = self.clock()
        if self._ordered_from is not self.instances:
            self._ordered = sorted(self.instances.values(), key=lambda i: i.id)
            self._ordered_from = self.instances
        usable = [i for i in self._ordered if i.ejected_until <= now]
        if len(usable) * 100 < self.policy.panic_threshold_percent * len(self._ordered):
            usable = self._ordered
            self.panics += 1
        if exclude:
            usable = [i for i in usable if i.id not in exclude]
        if pinned is not None:
            usable = [i for i in usable if i.version == pinned]
        elif weights:
            present = {i.version for i in usable}
            live = {v: w for v, w in weights.items() if w > 0 and v in present}
            # Weights naming only versions that have no instance fall back to what exists,
            # so a mistaken weight never turns into an outage.
            if live:
                version = self._versions.pick(live)
                usable = [i for i in usable if i.version == version]
        if not usable:
            return None
        self._rr += 1
        if len(usable) == 1:
            return usable[0]
        if self.strategy == "round_robin":
            return usable[self._rr % len(usable)]
        least = min(i.outstanding for i in usable)
        tied = [i for i in usable if i.outstanding == least]
        return tied[self._rr % len(tied)]

    def begin(self, inst: Instance) -> None:
        inst.outstanding += 1
        inst.requests += 1

    def end(self, inst: Instance, ok: bool) -> bool:
        """Record an attempt's outcome; return True when it just got the instance ejected."""
        inst.outstanding = max(0, inst.outstanding - 1)
        if ok:
            inst.consecutive_failures = 0
            inst.consecutive_successes += 1
            # A healthy streak as long as the ejection threshold forgives earlier ejections.
            if inst.consecutive_successes >= self.policy.consecutive_failures:
                inst.ejections = 0
            return False
        inst.failures += 1
        inst.consecutive_successes = 0
        inst.consecutive_failures += 1
        if inst.consecutive_failures < self.policy.consecutive_failures:
            return False
        now = self.clock()
        if inst.ejected(now) or not self._may_eject(now):
            return False
        inst.ejections += 1
        backoff = self.policy.base_ejection * 2 ** (inst.ejections - 1)
        inst.ejected_until = now + min(backoff, self.policy.max_ejection)
        inst.consecutive_failures = 0
        return True

    def _may_eject(self, now: float) -> bool:
        ejected = sum(1 for i in self.instances.values() if i.ejected(now))
        if ejected == 0:
            return True
        allowed = len(self.instances) * self.policy.max_ejected_percent // 100
        return ejected < allowed

    def ejected_ids(self) -> list[str]:
        now = self.clock()
        return [i.id for i in self.instances.values() if i.ejected(now)]
