"""Rolling update with max surge 1 and max unavailable 0: one new replica ready (passing in
Consul and routed to by the gateway), then one old replica drained and stopped; repeat."""

from __future__ import annotations

from infra.local.rollouts.state import Rollout
from infra.local.rollouts.target import Target


async def run(r: Rollout, t: Target) -> None:
    old, new, total = r.stable, r.version, r.replicas
    # Weights would pin traffic to one version; a rolling update shares it by instance.
    await r.route(t, None)
    r.note(f"rolling {r.service} {old} -> {new}: {total} replicas, surge 1, unavailable 0")
    for done in range(1, total + 1):
        await r.scale_to(t, new, done)
        r.note(f"{new} {done}/{total} ready and routed by the gateway")
        await r.scale_to(t, old, total - done)
        r.note(f"{old} replica drained and stopped ({total - done} left)")
        r.status.step = done
    await r.retire_stable(t)


async def undo(r: Rollout, t: Target) -> None:
    """Bring the old version back to full strength first, then remove the new one."""
    await r.scale_to(t, r.stable, r.replicas)
    await r.scale_to(t, r.version, 0)
