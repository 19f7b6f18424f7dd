"""The local runtime's catalogue: which services run, how they start, how they autoscale.

It is read from ``infra/local/platform.toml`` (or ``$MESH_PLATFORM_FILE``, which tests use to
run their own small services under their own names).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.kafka.topics import TOPICS, consumed_by
from infra.runtime.models import VERSION_PATTERN
from services.common.units import Duration, describe_errors

DEFAULT_PLATFORM = Path(__file__).with_name("platform.toml")
PLATFORM_VAR = "MESH_PLATFORM_FILE"
DEFAULT_GATEWAY_PORT = 8080


PositiveDuration = Annotated[Duration, Field(gt=0)]


class CatalogError(ValueError):
    """The catalogue is unreadable or invalid; the message is one line."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricSpec(_Spec):
    """A per-replica target: requests in flight, CPU percent of one core, or messages of
    consumer lag (KEDA's ``lagThreshold``)."""

    type: Literal["in_flight", "cpu", "lag"]
    target: Annotated[float, Field(gt=0)]


class PolicySpec(_Spec):
    """At most ``value`` pods (or percent of the replicas) per ``period`` (an HPA policy)."""

    type: Literal["pods", "percent"]
    value: Annotated[int, Field(ge=1)]
    period: PositiveDuration


class RulesSpec(_Spec):
    stabilization: Duration = 0.0
    policies: list[PolicySpec] = Field(default_factory=list)
    select: Literal["max", "min", "disabled"] = "max"


# Kubernetes' defaults (HPA autoscaling/v2 ``behavior``).
DEFAULT_SCALE_UP = RulesSpec(
    stabilization=0.0,
    policies=[
        PolicySpec(type="pods", value=4, period=15.0),
        PolicySpec(type="percent", value=100, period=15.0),
    ],
)
DEFAULT_SCALE_DOWN = RulesSpec(
    stabilization=300.0, policies=[PolicySpec(type="percent", value=100, period=15.0)]
)


class AutoscaleSpec(_Spec):
    min: Annotated[int, Field(ge=1)] = 1
    max: Annotated[int, Field(ge=1)] = 4
    tolerance: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    sync_period: PositiveDuration = 15.0
    # Gauges (in flight, lag) are sampled this often and averaged over the sync period.
    sample_interval: PositiveDuration = 1.0
    metrics: list[MetricSpec]
    scale_up: RulesSpec = DEFAULT_SCALE_UP
    scale_down: RulesSpec = DEFAULT_SCALE_DOWN
    # KEDA's allowIdleConsumers: by default lag never asks for more replicas than partitions.
    allow_idle_consumers: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if not self.metrics:
            raise ValueError("needs at least one metric")
        return self


class ServiceSpec(_Spec):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    kind: Literal["gateway", "service"] = "service"
    module: str | None = None  # run as ``python -m <module>``
    argv: list[str] | None = None  # or an explicit command; "{python}" is this interpreter
    replicas: Annotated[int, Field(ge=0, le=50)] = 1
    version: Annotated[str, Field(pattern=VERSION_PATTERN)] = "v1"
    env: dict[str, str] = Field(default_factory=dict)
    # A GET through the gateway that proves a version answers (blue-green's smoke check).
    smoke_path: str | None = None
    autoscale: AutoscaleSpec | None = None
    # Topics whose lag this service's consumers own; default: from infra/kafka/topics.py.
    topics: list[str] | None = None

    @model_validator(mode="after")
    def _command(self) -> ServiceSpec:
        if (self.module is None) == (self.argv is None):
            raise ValueError(f"{self.name}: set exactly one of module and argv")
        return self

    def command(self) -> list[str]:
        if self.module is not None:
            return [sys.executable, "-m", self.module]
        assert self.argv is not None
        return [sys.executable if part == "{python}" else part for part in self.argv]

    def consumed_topics(self) -> list[str]:
        return list(self.topics) if self.topics is not None else consumed_by(self.name)

    def partitions(self) -> int:
        """Partitions this service's consumer group reads: the most useful consumers."""
        counts = {t.name: t.partitions for t in TOPICS}
        return sum(counts.get(topic, 1) for topic in self.consumed_topics())


class RuntimeSpec(_Spec):
    check_interval: Duration = 1.0
    check_timeout: Duration = 1.0
    deregister_critical_after: Duration = 30.0
    shutdown_grace: Duration = 10.0
    versions_dir: str = "../versions"  # relative to the catalogue file
    restart_backoff: PositiveDuration = 0.5
    restart_backoff_max: PositiveDuration = 30.0
    # Crashes in a row before a replica is shown as crash-looping, and before giving up.
    crashloop_after: Annotated[int, Field(ge=1)] = 3
    max_restarts: Annotated[int, Field(ge=1)] = 10
    # A replica that ran this long before crashing starts its backoff afresh.
    stable_after: Duration = 30.0
    ready_timeout: Duration = 60.0
    # Enforce memory and CPU limits with cgroup v2 where the machine offers it; false: the
    # supervisor's RSS watch for memory and no CPU limit, whatever the machine offers.
    use_cgroups: bool = True


class Platform(_Spec):
    runtime: RuntimeSpec = RuntimeSpec()
    service: list[ServiceSpec]
    path: Path

    @model_validator(mode="after")
    def _one_gateway(self) -> Platform:
        gateways = [s for s in self.service if s.kind == "gateway"]
        if len(gateways) != 1:
            raise ValueError("the catalogue needs exactly one service of kind gateway")
        names = [s.name for s in self.service]
        if len(set(names)) != len(names):
            raise ValueError("service names must be unique")
        return self

    @property
    def gateway(self) -> ServiceSpec:
        return next(s for s in self.service if s.kind == "gateway")

    @property
    def services(self) -> list[ServiceSpec]:
        """The shop's services (everything but the gateway), in catalogue order."""
        return [s for s in self.service if s.kind != "gateway"]

    def get(self, name: str) -> ServiceSpec:
        for spec in self.service:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.service)
        raise CatalogError(f"unknown service {name!r} (known: {known})")

    @property
    def versions_dir(self) -> Path:
        return (self.path.parent / self.runtime.versions_dir).resolve()


def platform_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    wanted = env.get(PLATFORM_VAR, "").strip()
    return Path(wanted).resolve() if wanted else DEFAULT_PLATFORM


def load_platform(path: Path | None = None) -> Platform:
    path = path or platform_path()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read the catalogue {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    try:
        return Platform.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise CatalogError(f"{path}: {describe_errors(exc)}") from None
