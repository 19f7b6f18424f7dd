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
    """The runtime called ``name``: ``local``, ``compose`` or ``k8s``."""
    if name == "local":
        from infra.local.runtime import LocalRuntime

        return LocalRuntime(home)
    if name == "compose":
        from infra.compose.runtime import ComposeRuntime

        return ComposeRuntime(home)
    if name == "k8s":
        try:
            from infra.k8s.runtime import K8sRuntime
        except ImportError:
            raise RuntimeFailure(
                "RUNTIME=k8s needs the kubernetes client: pip install '.[k8s]'"
            ) from None
        return K8sRuntime()
    raise RuntimeFailure(f"meshctl has no {name} adapter yet: use `make up RUNTIME={name}`")
