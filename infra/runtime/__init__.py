"""The runtime interface (:class:`Runtime`) and the runtimes that implement it.

runtime = get_runtime("local")
runtime.scale("orders", 3)
runtime.wait_healthy("orders", 3)
"""

from __future__ import annotations

from pathlib import Path

from infra.runtime.base import Progress, Runtime, RuntimeFailure
from infra.runtime.models import (
    PlatformStatus,
    ReplicaInfo,
    RolloutSpec,
    RolloutStatus,
    ServiceStatus,
)

__all__ = [
    "PlatformStatus",
    "Progress",
    "ReplicaInfo",
    "RolloutSpec",
    "RolloutStatus",
    "Runtime",
    "RuntimeFailure",
    "ServiceStatus",
    "get_runtime",
]


def get_runtime(name: str, home: Path | None = None) -> Runtime:
    """The runtime called ``name``; only ``local`` exists in this version."""
    if name == "local":
        from infra.local.runtime import LocalRuntime

        return LocalRuntime(home)
    raise RuntimeFailure(f"RUNTIME={name} is not available in this version yet; use RUNTIME=local")
