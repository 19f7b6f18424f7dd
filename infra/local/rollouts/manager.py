"""Starts, tracks, aborts and promotes rollouts; one at a time per service.

A strategy runs as its own task. Whatever stops it — an analysis that failed, a replica that
never got ready, ``meshctl rollout abort`` from another terminal — ends in the strategy's
``undo``, which puts all traffic back on the stable version and removes the new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType

from infra.local.rollouts import bluegreen, canary, rolling
from infra.local.rollouts.state import Rollout
from infra.local.rollouts.target import AbortRollout, Target
from infra.runtime.models import RolloutSpec, RolloutStatus

log = logging.getLogger(__name__)

STRATEGIES: dict[str, ModuleType] = {
    "rolling": rolling,
    "bluegreen": bluegreen,
    "canary": canary,
}


class RolloutError(ValueError):
    """A rollout request that cannot be honoured; ``code`` is for the API, the message for
    people (one line)."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Rollouts:
    def __init__(self, target: Target, validate: Callable[[RolloutSpec], None]) -> None:
        self.target = target
        self.validate = validate  # the runtime's own checks (known service, version file...)
        self.rollouts: dict[str, Rollout] = {}

    def active(self, service: str) -> bool:
        rollout = self.rollouts.get(service)
        return rollout is not None and not rollout.status.finished

    def get(self, service: str) -> RolloutStatus | None:
        rollout = self.rollouts.get(service)
        return rollout.status if rollout is not None else None

    def all(self) -> dict[str, RolloutStatus]:
        return {name: r.status for name, r in self.rollouts.items()}

    def start(self, spec: RolloutSpec) -> RolloutStatus:
        self.validate(spec)
        if self.active(spec.service):
            raise RolloutError(
                "rollout_in_progress",
                f"{spec.service} already has a rollout in progress "
                f"(meshctl rollout status|abort {spec.service})",
            )
        stable = self.target.stable(spec.service)
        if spec.version == stable:
            raise RolloutError("same_version", f"{spec.service} already runs {stable}")
        replicas = self.target.desired(spec.service, stable)
        if replicas < 1:
            raise RolloutError(
                "no_replicas", f"{spec.service} has no {stable} replica to replace: scale it first"
            )
        rollout = Rollout(spec, stable, replicas)
        self.rollouts[spec.service] = rollout
        rollout.task = asyncio.create_task(self._run(rollout), name=f"rollout-{spec.service}")
        return rollout.status

    async def _run(self, r: Rollout) -> None:
        strategy = STRATEGIES[r.spec.strategy]
        r.work = asyncio.create_task(strategy.run(r, self.target))
        try:
            await asyncio.wait([r.work])
        except asyncio.CancelledError:  # the supervisor is shutting down
            r.work.cancel()
            raise
        failed = False
        if r.work.cancelled():
            reason = r.abort_reason or "aborted"
        elif (exc := r.work.exception()) is None:
            return
        elif isinstance(exc, AbortRollout):
            reason = str(exc)
        else:
            log.error("rollout of %s failed", r.service, exc_info=exc)
            reason, failed = f"rollout failed: {exc!r}", True
        await self._undo(r, strategy.undo, reason, failed=failed)

    async def _undo(
        self,
        r: Rollout,
        undo: Callable[[Rollout, Target], Awaitable[None]],
        reason: str,
        *,
        failed: bool,
    ) -> None:
        r.status.phase = "aborting"
        r.note(f"{reason}: rolling back to {r.stable}")
        try:
            await undo(r, self.target)
        except Exception as exc:
            log.exception("rollback of %s failed", r.service)
            r.finish("failed", f"{reason}; the rollback failed too: {exc}")
            return
        phase = "failed" if failed else "aborted"
        r.finish(phase, f"{reason}; all traffic on {r.stable}, {r.version} stopped")

    def abort(self, service: str) -> RolloutStatus:
        rollout = self._current(service)
        if rollout.status.phase == "aborting":
            return rollout.status
        rollout.abort_reason = "aborted by meshctl rollout abort"
        # Cancel the strategy, not the task supervising it: that one runs the undo.
        if rollout.work is not None:
            rollout.work.cancel()
        return rollout.status

    def promote(self, service: str) -> RolloutStatus:
        rollout = self._current(service)
        if rollout.spec.strategy == "rolling":
            raise RolloutError("nothing_to_promote", "a rolling update has nothing to promote")
        rollout.promote_requested.set()
        rollout.note("promote requested")
        return rollout.status

    def _current(self, service: str) -> Rollout:
        rollout = self.rollouts.get(service)
        if rollout is None or rollout.status.finished:
            last = f" (last: {rollout.status.phase})" if rollout is not None else ""
            raise RolloutError("no_rollout", f"no rollout of {service} in progress{last}", 404)
        return rollout

    async def stop(self) -> None:
        tasks = [r.task for r in self.rollouts.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
