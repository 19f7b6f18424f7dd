"""What a runtime reports and accepts, the same on every runtime (local, compose, k8s).

These are the shapes drills and ``meshctl`` read; the local supervisor serves them as JSON
over its control API, so they are pydantic models (validated both ways).
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.units import Duration

VERSION_PATTERN = r"^v\d{1,4}$"
_VERSION = re.compile(VERSION_PATTERN)

Strategy = Literal["rolling", "bluegreen", "canary"]
Phase = Literal["progressing", "paused", "aborting", "completed", "aborted", "failed"]
FINISHED_PHASES = frozenset({"completed", "aborted", "failed"})


def check_version(version: str) -> str:
    """``v1``, ``v2``...; anything else is refused with a line that says what is expected."""
    if not _VERSION.match(version):
        raise ValueError(f"version {version!r} must look like v2 (v and a number)")
    return version


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReplicaInfo(_Model):
    """One running copy of a service (a process, a container or a pod)."""

    id: str
    service: str
    version: str
    address: str
    state: str  # starting, ready, unhealthy, stopping, backoff, crashloop, failed
    pid: int | None = None
    port: int | None = None
    restarts: int = 0
    started_at: float | None = None
    passing: bool = False
    last_exit: int | None = None
    log: str | None = None
    # Why the last process ended, as Kubernetes says it: OOMKilled, Error, Completed.
    last_reason: str | None = None
    oom_kills: int = 0
    # Resources: use (None when not measured) against the version's limits (None: no limit).
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None  # the highest RSS seen, restarts included
    cpu_percent: float | None = None  # of one core, over about the last second
    memory_limit_bytes: int | None = None
    cpu_limit_millicores: int | None = None


class ServiceStatus(_Model):
    """The DESIGN.md shape (``name``, ``replicas``, ``healthy``, ``versions``) plus detail."""

    name: str
    replicas: int
    healthy: int
    versions: dict[str, int]
    desired: dict[str, int] = Field(default_factory=dict)
    stable: str | None = None
    kind: str = "http"
    addresses: list[str] = Field(default_factory=list)
    weights: dict[str, int] | None = None
    rollout: str | None = None


class GatewayInfo(_Model):
    url: str
    api_key: str
    healthy: bool = False
    name: str = "gateway"  # its service name in Consul


class ConsoleInfo(_Model):
    url: str


class LimitsEnforcement(_Model):
    """How this runtime enforces the replicas' resource limits on this machine."""

    memory: Literal["cgroup", "rss-watch", "runtime"]  # runtime: the engine or the kubelet
    cpu: Literal["cgroup", "none", "runtime"]  # none: CPU limits are not enforced
    detail: str = ""


class PlatformStatus(_Model):
    runtime: str
    gateway: GatewayInfo | None
    services: list[ServiceStatus]
    infra: dict[str, dict[str, Any]]
    # The live page (``meshctl console``), while it runs.
    console: ConsoleInfo | None = None
    # Additions a runtime may fill: every replica, and how limits are enforced.
    replicas: list[ReplicaInfo] | None = None
    limits: LimitsEnforcement | None = None

    def service(self, name: str) -> ServiceStatus | None:
        return next((s for s in self.services if s.name == name), None)


class RolloutSpec(_Model):
    """What ``meshctl rollout`` asks for. Durations accept ``10s``, ``500ms``..."""

    model_config = ConfigDict(extra="forbid")

    service: str
    version: str
    strategy: Strategy = "rolling"
    # canary: traffic percentages per step; an analysis runs over each interval.
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default=[10, 25, 50, 100])
    interval: Duration = 10.0
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    max_p99: Duration = 0.5
    # Fewer canary requests than this in an interval is "inconclusive", not a pass.
    min_requests: Annotated[int, Field(ge=0)] = 10
    max_inconclusive: Annotated[int, Field(ge=0)] = 3
    # Failed analyses tolerated before the automatic abort (Argo Rollouts' failureLimit).
    failure_limit: Annotated[int, Field(ge=0)] = 0
    # bluegreen: how long blue stays up after the switch (an abort can switch back).
    keep_blue: Duration = 30.0
    smoke_requests: Annotated[int, Field(ge=0, le=100)] = 3
    ready_timeout: Duration = 60.0

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("steps")
    @classmethod
    def _ascending(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("at least one step")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must go up, like 10,25,50,100")
        return steps


class Analysis(_Model):
    """One canary analysis over one interval, from the gateway's per-version metrics."""

    step: int
    weight: int
    requests: int
    errors: int
    error_rate: float | None
    p99_ms: float | None
    verdict: Literal["pass", "fail", "inconclusive"]
    reason: str = ""
    at: float = 0.0


class RolloutEvent(_Model):
    at: float
    message: str


class RolloutStatus(_Model):
    service: str
    strategy: Strategy
    stable: str
    version: str
    phase: Phase
    message: str = ""
    step: int = 0  # index into steps (canary), replicas replaced (rolling)
    steps: list[int] = Field(default_factory=list)
    weights: dict[str, int] | None = None
    analyses: list[Analysis] = Field(default_factory=list)
    events: list[RolloutEvent] = Field(default_factory=list)
    started_at: float = 0.0
    finished_at: float | None = None
    interval: float = 0.0
    # What each analysis is judged against (canary): max_error_rate, max_p99 (s), min_requests.
    thresholds: dict[str, float] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES


class MetricReading(_Model):
    """One metric of one autoscaling decision: the per-replica value against its target."""

    name: str  # in_flight, cpu, lag
    value: float | None  # per-replica average; None when no replica reported it
    target: float
    ratio: float | None = None
    desired: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ScaleDecision(_Model):
    """Every input and step of one HPA decision (logged as one JSON line)."""

    at: float
    service: str
    current: int
    metrics: list[MetricReading]
    raw_desired: int
    stabilized: int
    up_limit: int
    down_limit: int
    desired: int
    min_replicas: int
    max_replicas: int
    reason: str


class AutoscalerTarget(_Model):
    """How one service autoscales, and where its stabilization stands right now."""

    min_replicas: int
    max_replicas: int
    sync_period: float
    targets: dict[str, float]  # metric name -> per-replica target
    scale_down_window: float  # seconds a lower recommendation must hold before it applies
    # Seconds until the scale-down window stops holding replicas up; None when it holds none.
    window_left: float | None = None
    next_decision_in: float | None = None


class AutoscaleStatus(_Model):
    enabled: bool
    services: dict[str, list[ScaleDecision]] = Field(default_factory=dict)
    log: str | None = None
    targets: dict[str, AutoscalerTarget] = Field(default_factory=dict)


class Overview(_Model):
    """Everything the console reads from a runtime once a second, in one call: the services
    and replicas, each service's current or last rollout, and the autoscaler. Unlike
    :class:`PlatformStatus` it carries no infra probes (the console probes those itself)."""

    runtime: str
    gateway: GatewayInfo | None
    services: list[ServiceStatus]
    replicas: list[ReplicaInfo]
    rollouts: dict[str, RolloutStatus] = Field(default_factory=dict)
    autoscale: AutoscaleStatus | None = None
