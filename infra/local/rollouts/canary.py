"""Canary with automated analysis, as Argo Rollouts and Flagger do it.

The canary starts with no traffic; each step sets its weight (and scales it to the same share
of the stable replica count), waits one interval, and judges the canary's success rate and p99
from the gateway's per-version metrics over that interval. A failed analysis (beyond
``failure_limit``) aborts: all traffic back to stable at once, then the canary is stopped.
After the last step the canary is promoted (automatically when that step is 100%, else on
``meshctl rollout promote``): it takes all the traffic and the full replica count, the
stable version is drained and stopped, and the weights are cleared.
"""

from __future__ import annotations

import math

from infra.local.rollouts.analysis import analyse, increase, version_traffic
from infra.local.rollouts.state import Rollout
from infra.local.rollouts.target import AbortRollout, Target


async def run(r: Rollout, t: Target) -> None:
    service, stable, canary, total = r.service, r.stable, r.version, r.replicas
    spec = r.spec
    await r.route(t, {stable: 100, canary: 0})
    r.note(
        f"canary {service} {stable} -> {canary}: steps {','.join(map(str, spec.steps))}%, "
        f"analysis every {spec.interval:g}s (error rate <= {spec.max_error_rate:.1%}, "
        f"p99 <= {spec.max_p99 * 1000:.0f}ms)"
    )
    failures = 0
    for index, weight in enumerate(spec.steps):
        r.status.step = index
        replicas = max(1, math.ceil(total * weight / 100))
        if t.desired(service, canary) < replicas:
            await r.scale_to(t, canary, replicas)
        await r.route(t, {stable: 100 - weight, canary: weight})
        r.note(f"step {index + 1}/{len(spec.steps)}: {weight}% to {canary} ({replicas} replicas)")
        inconclusive = 0
        while True:
            before = version_traffic(await t.gateway_metrics(), service, canary)
            if await r.hold(spec.interval):
                r.note("promote requested: skipping the remaining steps")
                await promote(r, t)
                return
            after = version_traffic(await t.gateway_metrics(), service, canary)
            result = analyse(increase(after, before), spec, index, weight)
            r.status.analyses.append(result)
            if result.verdict == "pass":
                r.note(f"analysis passed at {weight}%: {result.reason}")
                break
            if result.verdict == "fail":
                failures += 1
                if failures > spec.failure_limit:
                    raise AbortRollout(f"analysis failed at {weight}%: {result.reason}")
                r.note(f"analysis failed at {weight}% ({failures}/{spec.failure_limit} tolerated)")
                continue
            inconclusive += 1
            if inconclusive > spec.max_inconclusive:
                raise AbortRollout(
                    f"analysis inconclusive {inconclusive} times at {weight}%: {result.reason}; "
                    "send traffic (make load) or lower --min-requests"
                )
            r.note(f"analysis inconclusive at {weight}%: {result.reason}; measuring again")
    if spec.steps[-1] < 100:
        r.status.phase = "paused"
        r.note(f"all steps passed: `meshctl rollout promote {service}` to finish")
        await r.promote_requested.wait()
        r.status.phase = "progressing"
    await promote(r, t)


async def promote(r: Rollout, t: Target) -> None:
    stable, canary, total = r.stable, r.version, r.replicas
    if t.desired(r.service, canary) < total:
        await r.scale_to(t, canary, total)
    await r.route(t, {stable: 0, canary: 100})
    r.note(f"promoting: all traffic on {canary} ({total} replicas); draining {stable}")
    await r.retire_stable(t)


async def undo(r: Rollout, t: Target) -> None:
    """Traffic first (users stop seeing the canary at once), then the replicas."""
    stable, canary = r.stable, r.version
    await r.route(t, {stable: 100, canary: 0})
    r.note(f"all traffic back on {stable}")
    if t.desired(r.service, stable) < r.replicas:
        await r.scale_to(t, stable, r.replicas)
    await r.scale_to(t, canary, 0)
    await r.route(t, None)
