"""The autoscaler: the HPA algorithm per service, on when ``autoscale on``.

Every ``sample_interval`` it samples the service's ready replicas; every ``sync_period`` it
makes one decision (:class:`infra.local.hpa.Hpa`) and sets the stable version's replica count.
Each decision, with every input, is one JSON line in its log (``logs/autoscaler.jsonl`` on
the local runtime). A service in the middle of a rollout is left alone, as are services
scaled to zero by hand.

It drives replicas through :class:`Workloads`: the local supervisor's fleet of processes
(:class:`FleetWorkloads`), or the containers of a compose project
(``infra.compose.autoscaler``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from infra.local.catalog import Platform, ServiceSpec
from infra.local.fleet import Fleet
from infra.local.hpa import Hpa
from infra.local.replica import HOST, State
from infra.local.signals import Scrape, Signals, Target
from infra.runtime.models import AutoscalerTarget, AutoscaleStatus, ScaleDecision

log = logging.getLogger(__name__)

KEEP_DECISIONS = 20


class Workloads(Protocol):
    """The replica counts the autoscaler reads and sets, and the replicas it samples."""

    def stable(self, service: str) -> str | None: ...

    def desired(self, service: str, version: str) -> int: ...

    def set_desired(self, service: str, version: str, count: int) -> None: ...

    def ready(self, service: str) -> list[Target]: ...


class FleetWorkloads:
    """The local supervisor's processes."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def stable(self, service: str) -> str | None:
        return self.fleet.stable.get(service)

    def desired(self, service: str, version: str) -> int:
        return self.fleet.desired_of(service, version)

    def set_desired(self, service: str, version: str, count: int) -> None:
        self.fleet.set_desired(service, version, count)

    def ready(self, service: str) -> list[Target]:
        return [
            Target(f"{HOST}:{r.port}", r.pid)
            for r in self.fleet.of(service)
            if r.state is State.READY and r.pid is not None
        ]


class Autoscaler:
    def __init__(
        self,
        platform: Platform,
        workloads: Workloads,
        *,
        busy: Callable[[str], bool],
        scrape: Scrape,
        log_path: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workloads = workloads
        self.busy = busy  # True while a rollout owns the service's replica counts
        self.log_path = log_path
        self.clock = clock
        self.enabled = False
        self.specs = [s for s in platform.services if s.autoscale is not None]
        self.hpas = {s.name: Hpa(s.autoscale, clock) for s in self.specs if s.autoscale}
        self.signals = {s.name: Signals(s, scrape, clock) for s in self.specs}
        self.decisions: dict[str, deque[ScaleDecision]] = {
            s.name: deque(maxlen=KEEP_DECISIONS) for s in self.specs
        }
        self._next_sample: dict[str, float] = {}
        self._next_sync: dict[str, float] = {}

    def set_enabled(self, enabled: bool) -> None:
        if enabled and not self.enabled:
            now = self.clock()
            for spec in self.specs:
                assert spec.autoscale is not None
                self.hpas[spec.name].reset()
                self.signals[spec.name].reset()
                self._next_sample[spec.name] = now
                # The first decision comes after one full period of samples.
                self._next_sync[spec.name] = now + spec.autoscale.sync_period
        self.enabled = enabled
        log.info("autoscaler %s", "on" if enabled else "off")

    def status(self) -> AutoscaleStatus:
        now = self.clock()
        targets = {}
        for spec in self.specs:
            assert spec.autoscale is not None
            scaling = spec.autoscale
            next_sync = self._next_sync.get(spec.name)
            targets[spec.name] = AutoscalerTarget(
                min_replicas=scaling.min,
                max_replicas=scaling.max,
                sync_period=scaling.sync_period,
                targets={m.type: m.target for m in scaling.metrics},
                scale_down_window=scaling.scale_down.stabilization,
                window_left=self.hpas[spec.name].window_left() if self.enabled else None,
                next_decision_in=(
                    round(max(next_sync - now, 0.0), 1)
                    if self.enabled and next_sync is not None
                    else None
                ),
            )
        return AutoscaleStatus(
            enabled=self.enabled,
            services={name: list(d) for name, d in self.decisions.items()},
            log=str(self.log_path),
            targets=targets,
        )

    def _targets(self, spec: ServiceSpec) -> list[Target]:
        return self.workloads.ready(spec.name)

    async def run(self) -> None:
        if not self.specs:
            return
        tick = min(s.autoscale.sample_interval for s in self.specs if s.autoscale) / 2
        while True:
            await asyncio.sleep(max(tick, 0.05))
            if self.enabled:
                await self.step()

    async def step(self) -> None:
        now = self.clock()
        for spec in self.specs:
            assert spec.autoscale is not None
            name = spec.name
            if self.busy(name):
                self._next_sync[name] = now + spec.autoscale.sync_period
                continue
            if now >= self._next_sample.get(name, now):
                await self.signals[name].sample(self._targets(spec))
                self._next_sample[name] = now + spec.autoscale.sample_interval
            if now >= self._next_sync.get(name, now):
                self._next_sync[name] = now + spec.autoscale.sync_period
                self._decide(spec)

    def _decide(self, spec: ServiceSpec) -> None:
        stable = self.workloads.stable(spec.name)
        if stable is None:
            return
        current = self.workloads.desired(spec.name, stable)
        if current == 0:
            return
        readings = self.signals[spec.name].readings(self._targets(spec), current)
        decision = self.hpas[spec.name].decide(spec.name, current, readings)
        self.decisions[spec.name].append(decision)
        self._log(decision)
        if decision.desired != current:
            self.workloads.set_desired(spec.name, stable, decision.desired)
            log.info(
                "autoscaler: %s %d -> %d (%s)",
                spec.name,
                current,
                decision.desired,
                decision.reason,
            )

    def _log(self, decision: ScaleDecision) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(decision.model_dump_json() + "\n")
