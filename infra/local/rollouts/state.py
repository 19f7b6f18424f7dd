"""One rollout in progress: its spec, its public status, and the signals a user can send."""

from __future__ import annotations

import asyncio
import logging
import time

from infra.local.rollouts.target import Target
from infra.runtime.models import RolloutEvent, RolloutSpec, RolloutStatus

log = logging.getLogger("infra.local.rollouts")


class Rollout:
    def __init__(self, spec: RolloutSpec, stable: str, replicas: int) -> None:
        self.spec = spec
        self.replicas = replicas  # of the stable version when the rollout began
        self.promote_requested = asyncio.Event()
        self.abort_reason: str | None = None
        self.task: asyncio.Task[None] | None = None  # supervises ``work``, runs the undo
        self.work: asyncio.Task[None] | None = None  # the strategy itself
        self.status = RolloutStatus(
            service=spec.service,
            strategy=spec.strategy,
            stable=stable,
            version=spec.version,
            phase="progressing",
            steps=list(spec.steps) if spec.strategy == "canary" else [],
            started_at=time.time(),
            interval=spec.interval,
            thresholds=(
                {
                    "max_error_rate": spec.max_error_rate,
                    "max_p99": spec.max_p99,
                    "min_requests": spec.min_requests,
                }
                if spec.strategy == "canary"
                else {}
            ),
        )

    @property
    def service(self) -> str:
        return self.spec.service

    @property
    def stable(self) -> str:
        return self.status.stable

    @property
    def version(self) -> str:
        return self.spec.version

    def note(self, message: str) -> None:
        """Record a step; ``meshctl rollout`` prints these as progress lines."""
        self.status.message = message
        self.status.events.append(RolloutEvent(at=time.time(), message=message))
        log.info(message, extra={"rollout": self.service, "phase": self.status.phase})

    def finish(self, phase: str, message: str) -> None:
        self.status.phase = phase  # type: ignore[assignment]
        self.status.finished_at = time.time()
        self.note(message)

    async def route(self, t: Target, weights: dict[str, int] | None) -> None:
        """Set the gateway weights of the service (Consul KV) and show them in the status."""
        await t.set_weights(self.service, weights)
        self.status.weights = weights

    async def scale_to(self, t: Target, version: str, count: int) -> None:
        """Set a version's replica count and wait: up until all are ready and routed, down
        until the extra ones have drained and exited."""
        before = t.desired(self.service, version)
        t.set_desired(self.service, version, count)
        if count > before:
            await t.wait_ready(self.service, version, count, self.spec.ready_timeout)
        else:
            await t.wait_at_most(self.service, version, count, self.spec.ready_timeout)

    async def retire_stable(self, t: Target) -> None:
        """The new version serves everything: stop the old one, clear the weights, done."""
        await self.scale_to(t, self.stable, 0)
        t.set_stable(self.service, self.version)
        await self.route(t, None)
        self.finish(
            "completed",
            f"{self.service} now runs {self.version} on {self.replicas} replicas; "
            f"{self.stable} stopped",
        )

    async def hold(self, seconds: float) -> bool:
        """Wait ``seconds`` unless a promote arrives first; True when promoted."""
        try:
            await asyncio.wait_for(self.promote_requested.wait(), seconds)
        except TimeoutError:
            return False
        return True
