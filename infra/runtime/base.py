"""The runtime interface: what ``meshctl`` and the drills need from any runtime.

``LocalRuntime`` (processes under a supervisor) implements it now; compose and Kubernetes
runtimes implement the same methods later, so a drill written against :class:`Runtime` runs
on all three. Traffic weights and faults live in Consul KV on every runtime, so they are
implemented here once, on top of :meth:`Runtime.consul_address`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

from infra.runtime.kv import MeshKV
from infra.runtime.models import (
    AutoscaleStatus,
    GatewayInfo,
    Overview,
    PlatformStatus,
    ReplicaInfo,
    RolloutSpec,
    RolloutStatus,
    ServiceStatus,
)
from services.common.faults import FaultSettings

Progress = Callable[[str], None]
T = TypeVar("T")


def quiet(message: str) -> None:
    pass


class RuntimeFailure(RuntimeError):
    """A runtime refused or failed an operation; the message is one line for the user."""


class PartialStart(RuntimeFailure):
    """``up`` started the platform, but not all that was asked for (the compose stack on its
    local stand-ins when no registry answered): the message says what is missing, ``status``
    is what runs. The command shows the platform and still fails."""

    def __init__(self, message: str, status: PlatformStatus) -> None:
        super().__init__(message)
        self.status = status


class Runtime(ABC):
    name: ClassVar[str]

    # -- lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    def up(self, progress: Progress = quiet) -> PlatformStatus:
        """Start infra, gateway and every service; return once all are healthy."""

    @abstractmethod
    def down(self, progress: Progress = quiet) -> list[str]:
        """Stop everything gracefully and leave no process behind; return what stopped."""

    @abstractmethod
    def running(self) -> bool:
        """True when the platform (not only the infra) is up."""

    # -- state ---------------------------------------------------------------------------------
    @abstractmethod
    def status(self) -> PlatformStatus:
        """The DESIGN.md state: runtime, gateway url and key, services, infra."""

    @abstractmethod
    def replicas(self, service: str | None = None) -> list[ReplicaInfo]:
        """Every replica (of one service) with its version, address and state."""

    @abstractmethod
    def consul_address(self) -> str:
        """Where Consul answers (``http://host:port``) from this machine."""

    @abstractmethod
    def consumer_lag(self, service: str) -> float | None:
        """The Kafka consumer lag of the service's group (messages), ``None`` if unknown."""

    def gateway(self) -> GatewayInfo | None:
        return self.status().gateway

    def overview(self) -> Overview:
        """Services, replicas, rollouts and the autoscaler in one read (the console's tick).

        Composed from the other methods here; a runtime that can answer it in one call (the
        local supervisor) overrides it."""
        state = self.status()
        rollouts = {}
        for service in state.services:
            current = self.rollout_status(service.name)
            if current is not None:
                rollouts[service.name] = current
        try:
            autoscale: AutoscaleStatus | None = self.autoscale(None)
        except RuntimeFailure:
            autoscale = None
        return Overview(
            runtime=self.name,
            gateway=state.gateway,
            services=state.services,
            replicas=self.replicas(),
            rollouts=rollouts,
            autoscale=autoscale,
        )

    def admin_token(self) -> str | None:
        """The gateway's admin token (what the console's actions require), if this runtime
        keeps one where this machine can read it."""
        return None

    # -- scaling -------------------------------------------------------------------------------
    @abstractmethod
    def scale(self, service: str, replicas: int) -> ServiceStatus:
        """Set the replica count of the service's stable version; returns at once."""

    def set_version_replicas(self, service: str, version: str, replicas: int) -> None:
        """Run ``replicas`` replicas of any version beside the stable one (below the rollouts:
        a version the gateway shares by instance, as the lessons use it)."""
        raise RuntimeFailure(f"the {self.name} runtime cannot run a second version by hand yet")

    @abstractmethod
    def kill_replica(self, replica_id: str, signal: str = "KILL") -> ReplicaInfo:
        """Kill one replica without grace (a fault drill); the runtime restarts it."""

    @abstractmethod
    def autoscale(self, enabled: bool | None = None) -> AutoscaleStatus:
        """Turn the autoscaler on or off (``None``: leave it), return its state."""

    def wait_healthy(
        self,
        service: str,
        replicas: int,
        *,
        timeout: float = 60.0,
        progress: Progress = quiet,
        interval: float = 0.2,
    ) -> ServiceStatus:
        """Poll until ``service`` has exactly ``replicas`` replicas, all passing in Consul."""
        said: list[str] = []

        def check() -> tuple[ServiceStatus, bool]:
            current = self.status().service(service)
            if current is None:
                raise RuntimeFailure(f"unknown service {service!r}")
            line = f"{service}: {current.healthy}/{replicas} healthy, {current.replicas} running"
            if not said or said[-1] != line:
                progress(line)
                said.append(line)
            return current, current.replicas == replicas == current.healthy

        return _poll(check, timeout, interval, lambda: f"{said[-1]} after {timeout:.0f}s")

    # -- infrastructure faults (the broker-restart drill) ----------------------------------------
    INFRA_PARTS: ClassVar[tuple[str, ...]] = ("kafka", "redis", "consul")

    def stop_infra(self, part: str) -> None:
        """Stop one infrastructure part (``kafka``, ``redis``, ``consul``) as an outage would;
        the platform keeps running without it until :meth:`start_infra`."""
        raise RuntimeFailure(f"the {self.name} runtime cannot stop {part} yet")

    def start_infra(self, part: str, progress: Progress = quiet) -> None:
        """Start a part stopped by :meth:`stop_infra` at the same address; return once it
        answers (and, for Kafka, once the declared topics exist again)."""
        raise RuntimeFailure(f"the {self.name} runtime cannot start {part} yet")

    def crash_infra(self, part: str) -> None:
        """Kill one infrastructure part without grace (SIGKILL: no shutdown, no last write to
        disk), as a crash would; it stays down until :meth:`start_infra` starts it again at
        the same address, with the same settings (the redis-crash drill)."""
        raise RuntimeFailure(f"the {self.name} runtime cannot crash {part} yet")

    def set_redis_persistence(self, mode: str) -> None:
        """Switch Redis's persistence (``always``, ``everysec``, ``off``) while the platform
        runs, and keep it for Redis's restarts: a drill run once per mode on one platform.
        ``status().infra["redis"]["persistence"]`` says which one is on."""
        raise RuntimeFailure(f"the {self.name} runtime cannot switch Redis's persistence")

    def remove_volumes(self, progress: Progress = quiet) -> list[str]:
        """After :meth:`down`: delete what the platform keeps between runs (Redis's data), as
        ``docker compose down -v`` does; return what was removed."""
        raise RuntimeFailure(f"the {self.name} runtime cannot remove its volumes here")

    # -- rollouts ------------------------------------------------------------------------------
    @abstractmethod
    def rollout(self, spec: RolloutSpec) -> RolloutStatus:
        """Start a rollout (it runs in the runtime's controller); returns at once."""

    @abstractmethod
    def rollout_status(self, service: str) -> RolloutStatus | None:
        """The current or last rollout of ``service``."""

    @abstractmethod
    def rollout_abort(self, service: str) -> RolloutStatus:
        """Stop the rollout and put all traffic back on the stable version."""

    @abstractmethod
    def rollout_promote(self, service: str) -> RolloutStatus:
        """Skip the remaining steps and waits: make the new version the stable one."""

    def wait_rollout(
        self,
        service: str,
        *,
        timeout: float = 600.0,
        progress: Progress = quiet,
        interval: float = 0.2,
    ) -> RolloutStatus:
        """Poll until the rollout has finished (or paused, waiting for a promote)."""
        seen: list[RolloutStatus] = []

        def check() -> tuple[RolloutStatus, bool]:
            state = self.rollout_status(service)
            if state is None:
                raise RuntimeFailure(f"no rollout of {service}")
            shown = len(seen[-1].events) if seen else 0
            for event in state.events[shown:]:
                progress(event.message)
            seen.append(state)
            return state, state.finished or state.phase == "paused"

        def late() -> str:
            return f"rollout of {service} still {seen[-1].phase} after {timeout:.0f}s"

        return _poll(check, timeout, interval, late)

    # -- traffic and faults (Consul KV, the same everywhere) -----------------------------------
    def _kv(self) -> MeshKV:
        return MeshKV(self.consul_address())

    def weights(self, service: str) -> dict[str, int] | None:
        return self._kv().weights(service)

    def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        self._kv().set_weights(service, weights)

    def faults(self, service: str, version: str | None = None) -> FaultSettings | None:
        return self._kv().faults(service, version)

    def set_faults(
        self, service: str, faults: FaultSettings | None, version: str | None = None
    ) -> None:
        """Faults of a service (every version), or of one ``version`` of it."""
        self._kv().set_faults(service, faults, version)


def _poll(
    check: Callable[[], tuple[T, bool]],
    timeout: float,
    interval: float,
    late: Callable[[], str],
) -> T:
    """Call ``check`` until it says done; its exceptions end the wait (unlike
    :func:`infra.process.wait_until`, which takes them for "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        value, done = check()
        if done:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeFailure(late())
        time.sleep(interval)
