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
        # Put back what was there: off on local, on (the HPAs) on k8s.
        ctx.facts["autoscale_before"] = ctx.runtime.autoscale().enabled
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
        ctx.runtime.autoscale(bool(ctx.facts.pop("autoscale_before", False)))
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
