"""The drills: what each one does to the platform under load, and the SLOs it is judged on."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from infra.runtime import RuntimeFailure
from infra.runtime.models import RolloutSpec, RolloutStatus, Strategy
from loadtests.drills.audit import OrderAudit
from loadtests.drills.engine import SLO, Drill, DrillContext
from loadtests.drills.load import LoadPlan
from loadtests.drills.timeline import window
from services.common.faults import FaultSettings

READY_TIMEOUT = 45.0
# A replica starting on a 2-core laptop takes a core for about a second, and the few requests
# that wait behind it cost tens of ms of p99: with a baseline p99 of 20-30 ms, "2x" alone
# would judge that scheduling noise. The limit is never below the baseline + this.
JITTER_ALLOWANCE_MS = 50.0


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}ms"


def stable_version(ctx: DrillContext, service: str) -> str:
    current = ctx.runtime.status().service(service)
    if current is None:
        raise RuntimeFailure(f"unknown service {service!r}")
    if current.stable:
        return current.stable
    return max(current.versions, key=lambda v: current.versions[v]) if current.versions else "v1"


def ensure_replicas(ctx: DrillContext, service: str, replicas: int) -> int:
    """Scale to ``replicas`` and wait until all are healthy; return the count before."""
    current = ctx.runtime.status().service(service)
    if current is None:
        raise RuntimeFailure(f"unknown service {service!r}")
    before = current.replicas
    if before != replicas or current.healthy != replicas:
        ctx.say(f"  preparing: {service} to {replicas} replicas")
        ctx.runtime.scale(service, replicas)
        ctx.runtime.wait_healthy(service, replicas, timeout=READY_TIMEOUT)
    return before


def no_failures(rows: list[dict[str, Any]]) -> SLO:
    total = window(rows, 0.0, float("inf"))
    return SLO(
        "no failed requests",
        "0",
        f"{total.failures} of {total.requests}",
        total.failures == 0,
        "; ".join(sorted({e for r in rows for e in r.get("errors", {})}))[:300],
    )


def no_lost_orders(audit: OrderAudit) -> SLO:
    lost = audit.lost
    return SLO(
        "no lost orders",
        "every accepted order CONFIRMED or CANCELLED",
        f"{len(lost)} of {audit.accepted} not terminal",
        not lost and audit.accepted > 0,
        (f"e.g. {', '.join(lost[:3])}" if lost else f"checked in {audit.seconds:.1f}s")
        + ("" if audit.accepted else "; no order was accepted"),
    )


# -- rollouts ------------------------------------------------------------------------------------
class RolloutDrill(Drill):
    strategy: ClassVar[Strategy]
    replicas: ClassVar[int] = 2

    def target_version(self, ctx: DrillContext) -> str:
        if self.options.version:
            return self.options.version
        return "v2" if stable_version(ctx, self.options.service) != "v2" else "v1"

    def spec(self, ctx: DrillContext, version: str) -> RolloutSpec:
        return RolloutSpec(service=self.options.service, version=version, strategy=self.strategy)

    def prepare(self, ctx: DrillContext) -> None:
        ensure_replicas(ctx, self.options.service, self.replicas)
        ctx.facts["from_version"] = stable_version(ctx, self.options.service)
        ctx.facts["to_version"] = self.target_version(ctx)
        ctx.facts["operation"] = (
            f"{self.strategy} rollout {self.options.service} "
            f"{ctx.facts['from_version']} -> {ctx.facts['to_version']}"
        )

    def title_for(self, ctx: DrillContext) -> str:
        return f"{self.title}: {ctx.facts.get('operation', self.options.service)}"

    def operate(self, ctx: DrillContext) -> None:
        spec = self.spec(ctx, ctx.facts["to_version"])
        ctx.runtime.rollout(spec)
        ctx.event(f"rollout started: {ctx.facts['operation']}")
        seen = 0
        state: RolloutStatus | None = None

        def finished() -> bool:
            nonlocal seen, state
            state = ctx.runtime.rollout_status(spec.service)
            if state is None:
                return False
            for event in state.events[seen:]:
                ctx.event(event.message, at=event.at)
            seen = len(state.events)
            return state.finished

        ctx.wait_until(finished, self.duration + 60, "rollout")
        assert state is not None
        ctx.facts["rollout_phase"] = state.phase
        ctx.facts["rollout_message"] = state.message
        ctx.facts["rollout"] = state.model_dump(mode="json")

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        """Rolling and blue-green; the canaries judge their analyses instead."""
        return [
            self.completed(ctx),
            no_failures(rows),
            self.latency_kept(ctx, rows),
            no_lost_orders(audit),
        ]

    def completed(self, ctx: DrillContext) -> SLO:
        phase = ctx.facts.get("rollout_phase", "not started")
        return SLO(
            "rollout completed",
            "completed",
            str(phase),
            phase == "completed",
            str(ctx.facts.get("rollout_message", "")),
        )

    def latency_kept(self, ctx: DrillContext, rows: list[dict[str, Any]]) -> SLO:
        base = self.baseline(rows, ctx)
        end = (ctx.op_end if ctx.op_end is not None else rows[-1]["t"]) + 1
        during = window(rows, ctx.op_start or 0.0, end)
        limit = (
            max(2 * base.p99_ms, base.p99_ms + JITTER_ALLOWANCE_MS)
            if base.p99_ms is not None
            else None
        )
        passed = limit is not None and during.p99_ms is not None and during.p99_ms <= limit
        return SLO(
            "p99 during the rollout at most 2x the baseline",
            f"<= {_ms(limit)}",
            f"{_ms(during.p99_ms)} (baseline {_ms(base.p99_ms)})",
            passed,
            f"{during.requests} requests during the rollout, {base.requests} in the baseline"
            + (
                f"; 2x is raised to baseline + {JITTER_ALLOWANCE_MS:.0f}ms"
                if limit and base.p99_ms and limit > 2 * base.p99_ms
                else ""
            ),
        )


class Rolling(RolloutDrill):
    name = "rolling"
    title = "Rolling update"
    description = (
        "Replaces the service's replicas one at a time (surge 1, unavailable 0) under a "
        "constant open-loop load; no request may fail and the p99 may not double."
    )
    strategy = "rolling"


class BlueGreen(RolloutDrill):
    name = "bluegreen"
    title = "Blue-green deployment"
    description = (
        "Starts a full green set beside blue, smoke-checks it, switches all traffic at once, "
        "then retires blue; no request may fail and the p99 may not double."
    )
    strategy = "bluegreen"

    def spec(self, ctx: DrillContext, version: str) -> RolloutSpec:
        return RolloutSpec(
            service=self.options.service, version=version, strategy="bluegreen", keep_blue=3.0
        )


class Canary(RolloutDrill):
    name = "canary"
    title = "Canary release"
    description = (
        "Shifts traffic to the new version in steps, judging its error rate and p99 from the "
        "gateway's metrics after each interval; a healthy version is promoted."
    )
    strategy = "canary"
    interval: ClassVar[float] = 4.0
    steps: ClassVar[list[int]] = [25, 50, 100]

    def spec(self, ctx: DrillContext, version: str) -> RolloutSpec:
        return RolloutSpec(
            service=self.options.service,
            version=version,
            strategy="canary",
            steps=self.steps,
            interval=self.interval,
            max_error_rate=0.05,
            max_p99=1.0,
        )

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "steps": ",".join(map(str, self.steps)),
            "interval_s": self.interval,
        }

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        analyses = ctx.facts.get("rollout", {}).get("analyses", [])
        verdicts = [a["verdict"] for a in analyses]
        return [
            self.completed(ctx),
            no_failures(rows),
            SLO(
                "every analysis passed",
                "pass",
                ", ".join(f"{a['weight']}%: {a['verdict']}" for a in analyses) or "none",
                bool(verdicts) and all(v == "pass" for v in verdicts),
            ),
            no_lost_orders(audit),
        ]


class CanaryBad(Canary):
    name = "canary-bad"
    title = "Canary of a bad release"
    description = (
        "Rolls out a release that fails 30% of its requests as a canary; the analysis must "
        "roll it back by itself within two intervals, and users may see errors only in "
        "proportion to the canary's share of the traffic."
    )
    interval = 5.0
    steps = [20, 50, 100]

    def target_version(self, ctx: DrillContext) -> str:
        # orders-v3 (infra/versions) fails 30% of its requests: the bad release.
        return self.options.version or "v3"

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        state = ctx.facts.get("rollout", {})
        events = state.get("events", [])
        exposed = next((e["at"] for e in events if e["message"].startswith("step 1/")), None)
        back = next((e["at"] for e in events if "all traffic back on" in e["message"]), None)
        failed = next((a for a in state.get("analyses", []) if a["verdict"] == "fail"), None)
        slos = [
            SLO(
                "rolled back automatically",
                "aborted by the analysis",
                str(ctx.facts.get("rollout_phase", "not started")),
                ctx.facts.get("rollout_phase") == "aborted" and failed is not None,
                str(ctx.facts.get("rollout_message", "")),
            )
        ]
        limit = 2 * self.interval
        took = back - exposed if exposed is not None and back is not None else None
        slos.append(
            SLO(
                "rollback within two analysis intervals",
                f"<= {limit:g}s after the canary got traffic",
                "never" if took is None else f"{took:.1f}s",
                took is not None and took <= limit,
            )
        )
        if exposed is not None and back is not None and failed is not None:
            during = window(rows, ctx.rel(exposed), ctx.rel(back) + 1)
            prefix = "/api/" + self.options.service
            requests, failures = during.service_counts(prefix)
            rate = failures / requests if requests else 0.0
            bound = failed["weight"] / 100
            slos.append(
                SLO(
                    "errors seen by users bounded by the canary weight",
                    f"<= {bound:.0%} of {prefix} requests (weight at the breach)",
                    f"{rate:.1%} ({failures} of {requests})",
                    requests > 0 and rate <= bound,
                    f"canary analysis at the breach: {failed['reason']}",
                )
            )
        else:
            slos.append(
                SLO("errors seen by users bounded by the canary weight", "-", "no breach", False)
            )
        slos.append(no_lost_orders(audit))
        return slos


# -- scaling and faults ---------------------------------------------------------------------
class Autoscale(Drill):
    name = "autoscale"
    title = "Autoscaling under a traffic spike"
    description = (
        "Starts from one replica with the autoscaler on, then multiplies the arrival rate; the "
        "autoscaler must add replicas within 30 s and the p99 must be back under its threshold "
        "once they serve. The service gets 500 ms of latency (a slow dependency) for the drill: "
        "on a laptop its CPU is never the limit at these rates, while requests in flight grow "
        "with the arrival rate as in any I/O-bound service (Little's law), and that is what the "
        "autoscaler scales on."
    )
    rate = 10.0
    spike_rate: ClassVar[float] = 60.0
    slow_dependency_ms: ClassVar[float] = 500.0
    scale_out_limit: ClassVar[float] = 30.0
    max_p99_ms: ClassVar[float] = 1500.0

    def plan(self) -> LoadPlan:
        at = self.op_at()
        return LoadPlan(
            rate=self.rate, spike_rate=self.spike_rate, spike_at=at, spike_for=self.duration - at
        )

    def op_at(self) -> float:
        return 10.0

    def prepare(self, ctx: DrillContext) -> None:
        service = self.options.service
        ctx.facts["replicas_before"] = ensure_replicas(ctx, service, 1)
        ctx.facts["faults_before"] = ctx.runtime.faults(service)
        ctx.runtime.set_faults(service, FaultSettings(latency_ms=self.slow_dependency_ms))
        ctx.runtime.autoscale(True)
        ctx.facts["operation"] = f"spike {self.rate:g} -> {self.spike_rate:g} arrivals/s"

    def operate(self, ctx: DrillContext) -> None:
        service = self.options.service
        ctx.event(f"spike: {self.rate:g} -> {self.spike_rate:g} arrivals/s")

        def current() -> tuple[int, int]:
            status = ctx.runtime.status().service(service)
            return (status.replicas, status.healthy) if status else (0, 0)

        ctx.wait_until(lambda: current()[0] > 1, self.duration, f"{service} scale-out")
        replicas = current()[0]
        ctx.facts["scaled_out_at"] = ctx.now()
        ctx.event(f"autoscaler: {service} 1 -> {replicas} replicas")
        ctx.wait_until(lambda: current()[1] >= replicas, READY_TIMEOUT, "new replicas ready")
        ctx.facts["serving_at"] = ctx.now()
        ctx.event(f"{service}: {current()[1]} replicas ready")

    def restore(self, ctx: DrillContext) -> None:
        ctx.runtime.autoscale(False)
        ctx.runtime.set_faults(self.options.service, ctx.facts.pop("faults_before", None))
        before = ctx.facts.get("replicas_before")
        if isinstance(before, int):
            ctx.runtime.scale(self.options.service, before)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "max_p99_ms": self.max_p99_ms,
            "slow_dependency_ms": self.slow_dependency_ms,
        }

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        start = ctx.op_start or self.op_at()
        scaled = ctx.facts.get("scaled_out_at")
        took = scaled - start if scaled is not None else None
        slos = [
            SLO(
                "scaled out within 30 s of the spike",
                f"<= {self.scale_out_limit:g}s",
                "never" if took is None else f"{took:.1f}s",
                took is not None and took <= self.scale_out_limit,
            )
        ]
        serving = ctx.facts.get("serving_at")
        after = window(rows, serving + 2, float("inf")) if serving is not None else None
        p99 = after.p99_ms if after else None
        slos.append(
            SLO(
                "p99 back under its threshold after the scale-out",
                f"<= {self.max_p99_ms:.0f}ms",
                _ms(p99) + (f" over {after.requests} requests" if after else ""),
                p99 is not None
                and after is not None
                and after.requests > 0
                and p99 <= self.max_p99_ms,
            )
        )
        slos.append(no_lost_orders(audit))
        return slos


class KillReplica(Drill):
    name = "kill-replica"
    title = "Kill a replica"
    description = (
        "SIGKILLs one replica of a service that runs two; the gateway fails over, the runtime "
        "restarts it. No order may be lost and fewer than 0.5% of requests may fail meanwhile."
    )
    max_error_rate: ClassVar[float] = 0.005

    def prepare(self, ctx: DrillContext) -> None:
        ctx.facts["replicas_before"] = ensure_replicas(ctx, self.options.service, 2)
        ctx.facts["operation"] = f"kill -KILL one {self.options.service} replica"

    def operate(self, ctx: DrillContext) -> None:
        service = self.options.service
        victims = [r for r in ctx.runtime.replicas(service) if r.state == "ready"]
        if not victims:
            raise RuntimeFailure(f"no ready replica of {service} to kill")
        victim = victims[0]
        ctx.runtime.kill_replica(victim.id, "KILL")
        ctx.event(f"killed {victim.id} (pid {victim.pid}) with SIGKILL")

        def healthy() -> int:
            status = ctx.runtime.status().service(service)
            return status.healthy if status else 0

        try:
            ctx.wait_until(lambda: healthy() < 2, 5.0, "the kill noticed")
            ctx.event(f"{service}: {healthy()} of 2 healthy")
        except RuntimeFailure:
            ctx.event("the runtime replaced it before a health check noticed")
        ctx.wait_until(lambda: healthy() >= 2, READY_TIMEOUT, f"{service} back to 2 healthy")
        ctx.event(f"{service}: back to 2 healthy replicas")

    def restore(self, ctx: DrillContext) -> None:
        before = ctx.facts.get("replicas_before")
        if isinstance(before, int) and before != 2:
            ctx.runtime.scale(self.options.service, before)

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        start = ctx.op_start or self.op_at()
        end = (ctx.op_end if ctx.op_end is not None else start) + 2
        during = window(rows, start, end)
        return [
            no_lost_orders(audit),
            SLO(
                "error rate during the failover under 0.5%",
                f"< {self.max_error_rate:.1%}",
                f"{during.error_rate:.2%} ({during.failures} of {during.requests})",
                during.requests > 0 and during.error_rate < self.max_error_rate,
                f"window {start:.0f}s-{end:.0f}s",
            ),
        ]


class BrokerRestart(Drill):
    name = "broker-restart"
    title = "Broker restart"
    description = (
        "Stops the Kafka broker under load and starts it again; orders accepted meanwhile wait "
        "in the outbox, lost in-flight events are re-announced by the saga's re-drive. Every "
        "accepted order must be CONFIRMED or CANCELLED within 60 s after the broker is back."
    )
    terminal_within: ClassVar[float] = 60.0

    def outage(self) -> float:
        return min(15.0, max(5.0, self.duration * 0.2))

    def prepare(self, ctx: DrillContext) -> None:
        ctx.facts["operation"] = f"kafka down for {self.outage():g}s"

    def operate(self, ctx: DrillContext) -> None:
        ctx.runtime.stop_infra("kafka")
        ctx.event("kafka stopped")
        if ctx.stop.wait(self.outage()):
            raise RuntimeFailure("drill stopped during the outage")
        ctx.runtime.start_infra("kafka", progress=ctx.event)
        ctx.facts["broker_back_at"] = time.time()
        ctx.event("kafka answering again")

    def restore(self, ctx: DrillContext) -> None:
        if "broker_back_at" not in ctx.facts:
            ctx.runtime.start_infra("kafka")

    def audit_deadline(self, ctx: DrillContext) -> float:
        back = ctx.facts.get("broker_back_at", time.time())
        return float(back) + self.terminal_within

    def params(self) -> dict[str, Any]:
        return {**super().params(), "outage_s": self.outage()}

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        back = ctx.facts.get("broker_back_at")
        last = max(audit.finished_at.values(), default=None)
        took = last - back if last is not None and back is not None else None
        return [
            no_lost_orders(audit),
            SLO(
                "accepted orders terminal within 60 s after the broker is back",
                f"<= {self.terminal_within:g}s",
                "broker never back"
                if back is None
                else f"last one {max(took or 0.0, 0.0):.1f}s after",
                back is not None
                and not audit.lost
                and (took is None or took <= self.terminal_within),
            ),
        ]


DRILLS: dict[str, type[Drill]] = {
    d.name: d
    for d in (Autoscale, Rolling, BlueGreen, Canary, CanaryBad, KillReplica, BrokerRestart)
}


# -- persistence: a Redis crash (issue 21) ----------------------------------------------------
# Self-contained: what it imports beyond the top of the file is imported here.
from infra.embedded.persistence import FSYNC_WINDOW, REDIS_MODES  # noqa: E402


class RedisCrash(Drill):
    name = "redis-crash"
    title = "Redis crash"
    description = (
        "SIGKILLs Redis under load (no shutdown, no last fsync) and starts it again at the "
        "same address a second later. The saga must resume by itself (gateway, consumers, "
        "outbox relay: nothing restarted), and no order accepted more than the fsync window "
        "before the crash may be lost (always: none; everysec: 2 s; off keeps nothing, so "
        "every earlier order is at risk and the drill fails). Every lost order is listed: its "
        "id, when it was accepted and why it counts as lost."
    )
    default_duration = 40.0
    min_duration = 15.0
    down_for: ClassVar[float] = 1.0  # seconds Redis stays dead
    resume_within: ClassVar[float] = 15.0  # until the gateway accepts orders again
    terminal_within: ClassVar[float] = 30.0  # after Redis is back, for every accepted order

    def prepare(self, ctx: DrillContext) -> None:
        # options.persistence (the persistence lesson runs the drill with off, then
        # everysec): Redis is switched to it for the drill, and back after.
        wanted = self.options.persistence
        if wanted is not None:
            ctx.facts["persistence_before"] = self._mode(ctx)
            ctx.runtime.set_redis_persistence(wanted)
        mode = self._mode(ctx)
        ctx.facts["persistence"] = mode
        ctx.facts["fsync_window_s"] = FSYNC_WINDOW.get(mode, 0.0)
        ctx.facts["restarts_before"] = {r.id: r.restarts for r in ctx.runtime.replicas()}
        ctx.facts["operation"] = f"kill -KILL redis (persistence {mode}), start it again"

    @staticmethod
    def _mode(ctx: DrillContext) -> str:
        redis = ctx.runtime.status().infra.get("redis", {})
        return str(redis.get("persistence") or "unknown")

    def operate(self, ctx: DrillContext) -> None:
        ctx.facts["crashed_at"] = time.time()
        ctx.runtime.crash_infra("redis")
        ctx.event(f"redis killed with SIGKILL (persistence {ctx.facts['persistence']})")
        if ctx.stop.wait(self.down_for):
            raise RuntimeFailure("drill stopped while Redis was down")
        ctx.runtime.start_infra("redis", progress=ctx.event)
        ctx.facts["redis_back_at"] = time.time()
        ctx.event("redis answering again at the same address")

        def all_ready() -> bool:
            state = ctx.runtime.status()
            gateway_ok = state.gateway is not None and state.gateway.healthy
            return gateway_ok and all(s.healthy >= s.replicas for s in state.services)

        ctx.wait_until(all_ready, READY_TIMEOUT, "every service ready again")
        ctx.facts["restarts_after"] = {r.id: r.restarts for r in ctx.runtime.replicas()}
        ctx.event("every service ready again")

    def restore(self, ctx: DrillContext) -> None:
        if "crashed_at" in ctx.facts and "redis_back_at" not in ctx.facts:
            ctx.runtime.start_infra("redis")
        before = ctx.facts.get("persistence_before")
        if self.options.persistence is not None and before in REDIS_MODES:
            ctx.runtime.set_redis_persistence(str(before))

    def audit_deadline(self, ctx: DrillContext) -> float:
        return float(ctx.facts.get("redis_back_at", time.time())) + self.terminal_within

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "redis_down_s": self.down_for,
            "persistence": self.options.persistence or "as the platform runs",
        }

    def measure_crash(self, ctx: DrillContext, audit: OrderAudit) -> dict[str, float | int | str]:
        """What the crash cost, from the accepted orders: the figures the SLOs (and a lesson
        that runs this drill once per persistence mode) judge. Also lists every lost order
        (``ctx.facts["lost_detail"]``, the report's Lost orders table). Only ``redis_crashed:
        0`` when the crash did not happen (the operation failed: the engine says why)."""
        if "crashed_at" not in ctx.facts or "redis_back_at" not in ctx.facts:
            return {"redis_crashed": 0}
        crashed = float(ctx.facts["crashed_at"])
        back = float(ctx.facts["redis_back_at"])
        window = float(ctx.facts.get("fsync_window_s") or 0.0)
        lost = crash_losses(audit, ctx, crashed, back, window)
        ctx.facts["lost_detail"] = lost
        inside = sum(1 for r in lost if r["in_window"])
        after = [i for i, at in audit.accepted_at.items() if at >= back]
        first = min((audit.accepted_at[i] for i in after), default=None)
        before: dict[str, int] = ctx.facts.get("restarts_before") or {}
        now: dict[str, int] = ctx.facts.get("restarts_after") or {}
        figures: dict[str, float | int | str] = {
            "redis_crashed": 1,
            "persistence": str(ctx.facts.get("persistence")),
            "fsync_window_s": window,
            "orders_accepted_before_window": sum(
                1 for at in audit.accepted_at.values() if at < crashed - window
            ),
            "orders_lost_in_window": inside,
            "orders_lost_outside_window": len(lost) - inside,
            "orders_accepted_after_restart": len(after),
            "orders_stuck_after_restart": sum(1 for i in after if i not in audit.terminal),
            # -1: no order was accepted after the restart
            "accepting_again_s": -1.0 if first is None else round(first - back, 2),
            "replicas_watched": len(before),
            "replicas_restarted": sum(1 for i in before if now.get(i, -1) != before[i]),
        }
        ctx.facts.update(figures)
        return figures

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        f = self.measure_crash(ctx, audit)
        if not f["redis_crashed"]:
            return [SLO("redis crashed and started again", "both", "not done", False)]
        lost: list[dict[str, Any]] = ctx.facts["lost_detail"]
        outside = [r for r in lost if not r["in_window"]]
        stuck = [
            i
            for i, at in audit.accepted_at.items()
            if at >= float(ctx.facts["redis_back_at"]) and i not in audit.terminal
        ]
        took = float(f["accepting_again_s"])
        restarted = int(f["replicas_restarted"])
        return [
            SLO(
                f"no order lost from before the fsync window ({f['persistence']})",
                f"0 lost of those accepted more than {f['fsync_window_s']:g}s before the crash "
                "or after it",
                f"{f['orders_lost_outside_window']} lost "
                f"({f['orders_accepted_before_window']} accepted before the window); "
                f"{f['orders_lost_in_window']} lost inside the window",
                not outside and int(f["orders_accepted_before_window"]) > 0,
                (f"e.g. {outside[0]['order']}: {outside[0]['why']}" if outside else "")
                + ("" if f["orders_accepted_before_window"] else "no order accepted before it")
                + ("; persistence off keeps nothing" if f["persistence"] == "off" else ""),
            ),
            SLO(
                "the shop accepts orders again by itself",
                f"first 202 within {self.resume_within:g}s after Redis is back",
                "no order accepted after the restart" if took < 0 else f"{took:.1f}s",
                0 <= took <= self.resume_within,
                f"{f['orders_accepted_after_restart']} orders accepted after the restart",
            ),
            SLO(
                "orders accepted after the restart all reach a final state",
                f"every one within {self.terminal_within:g}s (consumers and relay resumed)",
                f"{len(stuck)} of {f['orders_accepted_after_restart']} not terminal",
                int(f["orders_accepted_after_restart"]) > 0 and not stuck,
                f"e.g. {stuck[0]}: {audit.why_lost(stuck[0])}" if stuck else "",
            ),
            SLO(
                "no replica restarted",
                "the same replicas, no restart",
                f"{restarted} of {f['replicas_watched']} restarted or gone",
                int(f["replicas_watched"]) > 0 and restarted == 0,
            ),
        ]


def crash_losses(
    audit: OrderAudit, ctx: DrillContext, crashed: float, back: float, window: float
) -> list[dict[str, Any]]:
    """Each lost order with when it was accepted, relative to the crash, and why it is lost.
    Inside the window: accepted before Redis was back and at most ``window`` seconds before
    the crash (a window of 0, ``always``, has no inside)."""
    out = []
    for order_id in audit.lost:
        at = audit.accepted_at.get(order_id)
        before = None if at is None else round(crashed - at, 3)
        inside = window > 0 and at is not None and at < back and crashed - at <= window
        out.append(
            {
                "order": order_id,
                "accepted_s": None if at is None else ctx.rel(at),
                "before_crash_s": before,
                "in_window": inside,
                "why": audit.why_lost(order_id),
            }
        )
    return out


DRILLS[RedisCrash.name] = RedisCrash
