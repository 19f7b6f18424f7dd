"""When is a Deployment rolled out? The rule of ``kubectl rollout status`` (kubectl's
``DeploymentStatusViewer``), on the objects the kubernetes client returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TIMED_OUT = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class RolloutState:
    state: Literal["waiting", "done", "failed"]
    message: str
    updated: int = 0


def deployment_rollout(deployment: Any) -> RolloutState:
    """``done`` once the controller saw the newest spec, every replica is updated and available
    and no old replica is left; ``failed`` when the progress deadline passed."""
    name = deployment.metadata.name
    status = deployment.status
    generation = deployment.metadata.generation or 0
    if generation > (status.observed_generation or 0):
        return RolloutState("waiting", "waiting for the deployment spec update to be observed")
    updated = status.updated_replicas or 0
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == TIMED_OUT:
            return RolloutState(
                "failed", f"deployment {name!r} exceeded its progress deadline", updated
            )
    desired = deployment.spec.replicas
    if desired is not None and updated < desired:
        return RolloutState(
            "waiting", f"{updated} out of {desired} new replicas have been updated", updated
        )
    total = status.replicas or 0
    if total > updated:
        return RolloutState(
            "waiting", f"{total - updated} old replicas are pending termination", updated
        )
    available = status.available_replicas or 0
    if available < updated:
        return RolloutState(
            "waiting", f"{available} of {updated} updated replicas are available", updated
        )
    return RolloutState("done", f"deployment {name!r} successfully rolled out", updated)
