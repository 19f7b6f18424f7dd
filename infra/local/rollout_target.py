"""The rollout :class:`~infra.local.rollouts.target.Target` of the local runtime: the fleet
of processes for replica counts, Consul and the gateway for readiness and traffic."""

from __future__ import annotations

import asyncio
import time

from infra.local.catalog import Platform
from infra.local.fleet import Fleet
from infra.local.mesh import Mesh
from infra.local.replica import Replica, State
from infra.local.rollouts.target import AbortRollout

POLL = 0.1


class FleetTarget:
    def __init__(self, platform: Platform, fleet: Fleet, mesh: Mesh) -> None:
        self.platform = platform
        self.fleet = fleet
        self.mesh = mesh

    def stable(self, service: str) -> str:
        return self.fleet.stable[service]

    def set_stable(self, service: str, version: str) -> None:
        self.fleet.set_stable(service, version)

    def desired(self, service: str, version: str) -> int:
        return self.fleet.desired_of(service, version)

    def set_desired(self, service: str, version: str, count: int) -> None:
        self.fleet.set_desired(service, version, count)

    def smoke_path(self, service: str) -> str | None:
        return self.platform.get(service).smoke_path

    async def wait_ready(self, service: str, version: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready: list[Replica] = []
        while True:
            replicas = self.fleet.of(service, version)
            ready = [r for r in replicas if r.state is State.READY]
            if len(ready) >= count and await self._routed(service, ready, count):
                return
            broken = [r for r in replicas if r.state in (State.CRASHLOOP, State.FAILED)]
            if broken:
                worst = broken[0]
                raise AbortRollout(
                    f"{service} {version} keeps crashing (exit {worst.last_exit}): "
                    f"{worst.tail(2) or 'see meshctl logs ' + service}"
                )
            if time.monotonic() >= deadline:
                raise AbortRollout(
                    f"{service} {version}: {len(ready)}/{count} ready after {timeout:g}s"
                )
            await asyncio.sleep(POLL)

    async def _routed(self, service: str, ready: list[Replica], count: int) -> bool:
        """The gateway routes to them (it learns from Consul, a moment after us)."""
        try:
            seen = await self.mesh.gateway_sees(service)
        except Exception:
            return False
        return sum(1 for r in ready if r.id in seen) >= count

    async def wait_at_most(self, service: str, version: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.fleet.of(service, version, include_stopping=True)) > count:
            if time.monotonic() >= deadline:
                raise AbortRollout(
                    f"{service} {version}: replicas still running after {timeout:g}s"
                )
            await asyncio.sleep(POLL)

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        await self.mesh.set_weights(service, weights)

    async def gateway_metrics(self) -> str:
        return await self.mesh.gateway_metrics()

    async def smoke(self, path: str, version: str) -> str | None:
        return await self.mesh.smoke(path, version)
