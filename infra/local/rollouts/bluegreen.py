"""Blue-green: start the whole green set with no traffic, check it (ready, routed, a smoke
request pinned to green through the gateway), switch the weights 0/100 at once, keep blue for
a while (an abort switches back), then stop blue."""

from __future__ import annotations

from infra.local.rollouts.state import Rollout
from infra.local.rollouts.target import AbortRollout, Target


async def run(r: Rollout, t: Target) -> None:
    blue, green, total = r.stable, r.version, r.replicas
    # Green must not get traffic when it registers: blue keeps it all until the switch.
    await r.route(t, {blue: 100, green: 0})
    r.note(f"blue-green {r.service}: starting {total} {green} replicas next to {blue}")
    await r.scale_to(t, green, total)
    r.note(f"green {green}: {total}/{total} ready and routed by the gateway")
    await _smoke(r, t)
    await r.route(t, {blue: 0, green: 100})
    r.status.step = 1
    r.note(f"switched: all traffic on {green}; keeping {blue} for {r.spec.keep_blue:g}s")
    if await r.hold(r.spec.keep_blue):
        r.note("promoted: stopping blue now")
    await r.retire_stable(t)


async def _smoke(r: Rollout, t: Target) -> None:
    path = t.smoke_path(r.service)
    if path is None or r.spec.smoke_requests == 0:
        r.note("no smoke path for this service: readiness is the check")
        return
    for _ in range(r.spec.smoke_requests):
        problem = await t.smoke(path, r.version)
        if problem is not None:
            raise AbortRollout(f"smoke check of {r.version} failed: {problem}")
    r.note(f"smoke check: {r.spec.smoke_requests} x GET {path} pinned to {r.version} answered")


async def undo(r: Rollout, t: Target) -> None:
    """Switch back to blue (still running until the rollout completes), then stop green."""
    blue, green = r.stable, r.version
    await r.scale_to(t, blue, r.replicas)
    await r.route(t, {blue: 100, green: 0})
    await r.scale_to(t, green, 0)
    await r.route(t, None)
