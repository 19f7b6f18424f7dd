"""The drills: what each one does to the platform under load, and the SLOs it is judged on."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import psutil

from infra.runtime import RuntimeFailure
from infra.runtime.models import RolloutSpec, RolloutStatus, Strategy
from infra.runtime.versions import memory_text, version_resources
from loadtests.drills.audit import OrderAudit
from loadtests.drills.engine import SLO, WARMUP, Drill, DrillContext
from loadtests.drills.lesson import Chart, Fix, Lesson, LessonHalf, Role
from loadtests.drills.load import LoadPlan
from loadtests.drills.timeline import percentile, route_latencies, window
from services.common.faults import FaultSettings

READY_TIMEOUT = 45.0
# A replica starting on a 2-core laptop takes a core for about a second, and the few requests
# that wait behind it cost tens of ms of p99: with a baseline p99 of 20-30 ms, "2x" alone
# would judge that scheduling noise. The limit is never below the baseline + this.
# A container costs more to start than a process (the engine, the shim, the image's Python
# importing the service, its healthcheck execs): on a 2-core box, compose rollouts measured
# +122 ms (rolling) and +198 ms (blue-green starts the whole green fleet at once) of p99 on a
# quiet machine, and a CI machine measured +288 ms for blue-green, with no request failed and
# the worst seconds those of the green containers' imports. Failures and lost orders stay
# judged at zero on every runtime.
JITTER_ALLOWANCE_MS = {"local": 50.0, "compose": 400.0, "k8s": 50.0}


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
        allowance = JITTER_ALLOWANCE_MS.get(ctx.runtime.name, 50.0)
        limit = max(2 * base.p99_ms, base.p99_ms + allowance) if base.p99_ms is not None else None
        passed = limit is not None and during.p99_ms is not None and during.p99_ms <= limit
        return SLO(
            "p99 during the rollout at most 2x the baseline",
            f"<= {_ms(limit)}",
            f"{_ms(during.p99_ms)} (baseline {_ms(base.p99_ms)})",
            passed,
            f"{during.requests} requests during the rollout, {base.requests} in the baseline"
            + (
                f"; 2x is raised to baseline + {allowance:.0f}ms on {ctx.runtime.name}"
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
    # At the drill's load a 25% canary sees about 3 requests a second: 5 s gives it about 15,
    # half again the 10 an analysis needs to judge at all.
    interval: ClassVar[float] = 5.0
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
        return [
            self.completed(ctx),
            no_failures(rows),
            SLO(
                "every step's analysis passed, none failed",
                "pass",
                ", ".join(f"{a['weight']}%: {a['verdict']}" for a in analyses) or "none",
                every_step_passed(analyses, self.steps),
                # Too few canary requests in an interval is inconclusive: the rollout measures
                # that step again (as Flagger does), which is not a failed analysis.
                "an inconclusive interval (too little canary traffic) is measured again",
            ),
            no_lost_orders(audit),
        ]


def every_step_passed(analyses: list[dict[str, Any]], steps: list[int]) -> bool:
    """No analysis failed and each step's last analysis passed."""
    if any(a["verdict"] == "fail" for a in analyses):
        return False
    last = {a["weight"]: a["verdict"] for a in analyses}
    return all(last.get(weight) == "pass" for weight in steps)


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
        "once they serve. The service gets 500 ms of latency (a slow dependency) for the drill, "
        "700 ms on compose: on a laptop its CPU is never the limit at these rates, while "
        "requests in flight grow with the arrival rate as in any I/O-bound service (Little's "
        "law), and that is what the autoscaler scales on. The spike is 10 -> 60 arrivals/s, "
        "10 -> 25 on compose, whose containers get half a core each."
    )
    rate = 10.0
    spike_rate: ClassVar[float] = 60.0
    # On compose every service container is capped at half a core (the version files), and
    # on a 2-core box the spike must stay I/O-bound there, as the drill intends. Measured on
    # the engine: at 60/s stock's /readyz missed its check for seconds and a third of the
    # requests got 503 no_healthy_upstream; at 30/s orders' half core saturated (p50 2-4 s),
    # and a new container took 15-30 s to get ready (its imports alone: 5 s at half a core,
    # 1 s without a cap); at 20/s nothing failed but in flight hovered at the target (8) and
    # the scale-out took 34 s.
    spike_rates: ClassVar[dict[str, float]] = {"compose": 25.0}
    slow_dependency_ms: ClassVar[float] = 500.0
    # At 25/s and 500 ms, orders' in flight measured 7.7-9.3 against the target of 8: the
    # scale-out hung on the HPA's 10% tolerance, and a slower CI machine never scaled (in flight
    # is what the load generator manages to send times the latency). Latency costs no CPU, so
    # on compose it is raised until the spike asks for 2 replicas with a margin (~11-13 in
    # flight); at 800 ms a loaded machine went on to 4, whose start-up blew the p99.
    slow_dependency_by_runtime: ClassVar[dict[str, float]] = {"compose": 700.0}
    scale_out_limit: ClassVar[float] = 30.0
    # The p99 once the new replicas serve: at most this much above the slow dependency.
    p99_above_dependency_ms: ClassVar[float] = 1000.0

    def plan(self) -> LoadPlan:
        at = self.op_at()
        return LoadPlan(
            rate=self.rate, spike_rate=self.spike(), spike_at=at, spike_for=self.duration - at
        )

    def spike(self) -> float:
        return self.spike_rates.get(self.options.runtime, self.spike_rate)

    def slow_dependency(self) -> float:
        return self.slow_dependency_by_runtime.get(self.options.runtime, self.slow_dependency_ms)

    def max_p99_ms(self) -> float:
        return self.slow_dependency() + self.p99_above_dependency_ms

    def op_at(self) -> float:
        return 10.0

    def prepare(self, ctx: DrillContext) -> None:
        service = self.options.service
        ctx.facts["replicas_before"] = ensure_replicas(ctx, service, 1)
        ctx.facts["faults_before"] = ctx.runtime.faults(service)
        ctx.runtime.set_faults(service, FaultSettings(latency_ms=self.slow_dependency()))
        # Put back what was there: off on local, on (the HPAs) on k8s.
        ctx.facts["autoscale_before"] = ctx.runtime.autoscale().enabled
        ctx.runtime.autoscale(True)
        ctx.facts["operation"] = f"spike {self.rate:g} -> {self.spike():g} arrivals/s"

    def operate(self, ctx: DrillContext) -> None:
        service = self.options.service
        ctx.event(f"spike: {self.rate:g} -> {self.spike():g} arrivals/s")

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
            "max_p99_ms": self.max_p99_ms(),
            "slow_dependency_ms": self.slow_dependency(),
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
                f"<= {self.max_p99_ms():.0f}ms",
                _ms(p99) + (f" over {after.requests} requests" if after else ""),
                p99 is not None
                and after is not None
                and after.requests > 0
                and p99 <= self.max_p99_ms(),
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


# -- lessons: the chapter's common mistakes, the wrong way and then the right way -------------
# The version files every runtime reads (the lessons' releases and their limits are there).
VERSIONS_DIR = Path(__file__).resolve().parents[2] / "infra" / "versions"
MIB = 1024**2


def roll_to(ctx: DrillContext, service: str, version: str) -> None:
    """A gated rolling update to ``version`` between two runs of a lesson (not measured)."""
    state = ctx.runtime.rollout_status(service)
    if state is not None and not state.finished:
        ctx.runtime.rollout_abort(service)
        ctx.runtime.wait_rollout(service, timeout=120)
    if stable_version(ctx, service) == version:
        return
    ctx.say(f"  preparing: {service} back to {version} (a rolling update, not measured)")
    ctx.runtime.rollout(RolloutSpec(service=service, version=version, strategy="rolling"))
    state = ctx.runtime.wait_rollout(service, timeout=120)
    if state.phase != "completed":
        raise RuntimeFailure(f"{service} could not go back to {version}: {state.message}")


def _lost(measured: Mapping[str, Any]) -> SLO:
    lost, accepted = measured.get("orders_lost"), measured.get("orders_accepted", 0)
    return SLO(
        "no lost orders",
        "every accepted order CONFIRMED or CANCELLED",
        f"{lost} of {accepted} not terminal",
        lost == 0 and accepted > 0,
    )


def _number(measured: Mapping[str, Any], key: str) -> float | None:
    value = measured.get(key)
    return float(value) if isinstance(value, int | float) else None


def _shown(measured: Mapping[str, Any], key: str, unit: str = "", digits: int = 0) -> str:
    value = _number(measured, key)
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _nested(row: Mapping[str, Any], key: str, service: str, version: str) -> float | None:
    value = (row.get(key) or {}).get(service, {}).get(version)
    return float(value) if isinstance(value, int | float) else None


class ProbesHalf(LessonHalf, RolloutDrill):
    """A rolling update of two replicas to the slow-warming release."""

    name = "lesson-probes"
    title = "Lesson: no readiness probe"
    description = "One half of lesson-probes: a rolling update to a slow-warming release."
    strategy = "rolling"
    replicas = 2

    def op_at(self) -> float:
        return 8.0

    def target_version(self, ctx: DrillContext) -> str:
        assert isinstance(self.lesson, LessonProbes)
        return self.lesson.versions[self.role]

    def prepare(self, ctx: DrillContext) -> None:
        assert isinstance(self.lesson, LessonProbes)
        roll_to(ctx, self.options.service, self.lesson.start_version)
        super().prepare(ctx)
        probe = "no readiness probe" if self.role == "wrong" else "readiness probe on /readyz"
        ctx.facts["operation"] = (
            f"rolling update {self.options.service} {ctx.facts['from_version']} -> "
            f"{ctx.facts['to_version']} ({probe})"
        )

    def restore(self, ctx: DrillContext) -> None:
        assert isinstance(self.lesson, LessonProbes)
        roll_to(ctx, self.options.service, self.lesson.start_version)

    def measure(
        self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit
    ) -> dict[str, float | int | str]:
        start = ctx.op_start if ctx.op_start is not None else self.op_at()
        end = (ctx.op_end if ctx.op_end is not None else start) + 2
        during = window(rows, start, end)
        total = window(rows, 0.0, float("inf"))
        base = self.baseline(rows, ctx)
        measured: dict[str, float | int | str] = {
            "rollout_phase": str(ctx.facts.get("rollout_phase", "not started")),
            "failed_requests": total.failures,
            "requests": total.requests,
            "rollout_failures": during.failures,
            "rollout_requests": during.requests,
        }
        if ctx.op_start is not None and ctx.op_end is not None:
            measured["rollout_s"] = round(ctx.op_end - ctx.op_start, 1)
        if during.p99_ms is not None:
            measured["rollout_p99_ms"] = during.p99_ms
        if base.p99_ms is not None:
            measured["baseline_p99_ms"] = base.p99_ms
        return measured


class LessonProbes(Lesson):
    name = "lesson-probes"
    title = "Lesson: no readiness probe"
    description = (
        "Rolls orders (2 replicas) from v1 to a release that needs 6 s to warm up after it "
        "starts listening: first deployed without a readiness probe (v6), then with one (v7), "
        "under the same open-loop load."
    )
    mistake = (
        "The mistake: no health checks. A container without a readiness probe counts as ready "
        "the moment it starts, so the load balancer sends it requests while it is still warming "
        "up (a cold cache, a JIT, a connection pool being filled), and a rolling update moves "
        "on and stops the next old instance without waiting for the new one: for a few "
        "seconds nothing warm is left to answer. Here the same release (6 s of warm-up, "
        "requests wait until it is warm) is rolled out twice. Without a probe the registry "
        "only checks that its port answers; with the probe, /readyz answers 503 until it is "
        "warm, the gateway sends it nothing and the update waits for it."
    )
    versions: ClassVar[dict[str, str]] = {"wrong": "v6", "right": "v7"}
    start_version: ClassVar[str] = "v1"
    # Waiting behind a 6 s warm-up costs seconds; a healthy p99 here is tens of ms.
    max_p99_ms: ClassVar[float] = 1000.0
    half_duration = 32.0

    def half(self, role: Role) -> LessonHalf:
        return ProbesHalf(self.options, self, role)

    def expect(self, role: Role, measured: Mapping[str, Any]) -> list[SLO]:
        phase = str(measured.get("rollout_phase", "not started"))
        completed = SLO("the rolling update completed", "completed", phase, phase == "completed")
        if role == "wrong":
            failures = int(_number(measured, "rollout_failures") or 0)
            p99 = _number(measured, "rollout_p99_ms")
            hurt = failures > 0 or (p99 is not None and p99 > self.max_p99_ms)
            harm = SLO(
                "the mistake shows: requests fail or the p99 is blown during the update",
                f"> 0 failed, or p99 > {self.max_p99_ms:.0f}ms",
                f"{failures} failed of {measured.get('rollout_requests', 0)}, "
                f"p99 {_shown(measured, 'rollout_p99_ms', 'ms')}",
                hurt,
                f"baseline p99 {_shown(measured, 'baseline_p99_ms', 'ms')}",
            )
            return [completed, harm, _lost(measured)]
        failed = int(_number(measured, "failed_requests") or 0)
        requests = int(_number(measured, "requests") or 0)
        clean = SLO(
            "no failed requests",
            "0",
            f"{failed} of {requests}",
            failed == 0 and requests > 0,
            f"p99 during the update {_shown(measured, 'rollout_p99_ms', 'ms')}",
        )
        return [completed, clean, _lost(measured)]

    def comparison(self) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
        return [
            (
                "failed requests",
                "during the update (+2 s)",
                lambda m: f"{_shown(m, 'rollout_failures')} of {_shown(m, 'rollout_requests')}",
            ),
            (
                "failed requests",
                "the whole run",
                lambda m: f"{_shown(m, 'failed_requests')} of {_shown(m, 'requests')}",
            ),
            ("p99", "during the update", lambda m: _shown(m, "rollout_p99_ms", " ms")),
            ("p99", "before the update", lambda m: _shown(m, "baseline_p99_ms", " ms")),
            ("update took", "2 replicas", lambda m: _shown(m, "rollout_s", " s", 1)),
            ("orders lost", "accepted, not terminal", lambda m: _shown(m, "orders_lost")),
        ]

    def charts(self) -> list[Chart]:
        service = self.options.service

        def new_replicas(row: Mapping[str, Any]) -> float | None:
            versions = (row.get("replicas") or {}).get(service)
            if not isinstance(versions, Mapping):
                return None
            return float(sum(n for v, n in versions.items() if v != self.start_version))

        return [
            Chart(
                "failures",
                "Failed requests",
                "Failed requests per second, both runs on the same clock (seconds since the "
                "run's load started).",
                "failed requests per second",
                lambda row: float(row.get("failures") or 0),
            ),
            Chart(
                "p99",
                "p99 latency",
                "The 99th percentile of the response times of each second.",
                "ms (log scale)",
                lambda row: row.get("p99_ms"),
                log=True,
            ),
            Chart(
                "replicas",
                "Replicas of the new release",
                "Running replicas of the release being rolled out, in each run: with the probe, "
                "each new replica is waited for until it is warm.",
                "replicas",
                new_replicas,
                step=True,
            ),
        ]

    def fixes(self) -> list[Fix]:
        service = self.options.service
        return [
            Fix(
                f"infra/versions/{service}-{self.versions['wrong']}.env (this platform)",
                "dotenv",
                "# delete this line: the default, http, is the readiness probe on /readyz\n"
                "READINESS_PROBE=none\n",
            ),
            Fix(
                "Kubernetes: the container of the Deployment",
                "yaml",
                _yaml(
                    {
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "http"},
                            "periodSeconds": 2,
                            "failureThreshold": 2,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "http"},
                            "periodSeconds": 10,
                        },
                    }
                ),
            ),
            Fix(
                "docker-compose.yml: the service",
                "yaml",
                _yaml(
                    {
                        "services": {
                            service: {
                                "healthcheck": {
                                    "test": ["CMD", "python", "/opt/mesh/healthcheck.py"],
                                    "interval": "5s",
                                    "timeout": "3s",
                                    "retries": 3,
                                    "start_period": "30s",
                                }
                            }
                        }
                    }
                ),
            ),
        ]


class LimitsHalf(LessonHalf):
    """One replica of the leaking release beside a healthy one, under the same load."""

    name = "lesson-limits"
    title = "Lesson: no resource limits"
    description = "One half of lesson-limits: a replica of a leaking release beside a healthy one."

    def op_at(self) -> float:
        return 8.0

    @property
    def limits_lesson(self) -> LessonLimits:
        assert isinstance(self.lesson, LessonLimits)
        return self.lesson

    @property
    def version(self) -> str:
        return self.limits_lesson.versions[self.role]

    def prepare(self, ctx: DrillContext) -> None:
        service = self.options.service
        for version in self.limits_lesson.versions.values():
            ctx.runtime.set_version_replicas(service, version, 0)
        ctx.facts["replicas_before"] = ensure_replicas(ctx, service, 1)
        stable = stable_version(ctx, service)
        limit = self.limits_lesson.limit_of(self.version)
        ctx.facts["operation"] = (
            f"one {service} {self.version} replica (leaks under load; memory limit: "
            f"{'none' if limit is None else f'{limit / MIB:.0f} MiB'}) beside {stable}"
        )

    def operate(self, ctx: DrillContext) -> None:
        service, version = self.options.service, self.version
        lesson = self.limits_lesson
        ceiling = lesson.ceiling_bytes()
        ctx.runtime.set_version_replicas(service, version, 1)
        ctx.event(f"started one {service} {version} replica beside the stable one")
        samples: list[tuple[float, float]] = []  # (t, RSS MiB) while it leaks unchecked
        kills = restarts = 0
        peak = 0
        stopped = False
        while ctx.now() < self.duration - 1.0 and not ctx.stop.is_set():
            mine = [r for r in ctx.runtime.replicas(service) if r.version == version]
            for replica in mine:
                peak = max(peak, replica.peak_rss_bytes or 0, replica.rss_bytes or 0)
                if replica.oom_kills > kills:
                    kills = replica.oom_kills
                    ctx.event(
                        f"{version} replica {replica.last_reason or 'killed'} (kill {kills}; "
                        f"peak RSS {peak / MIB:.0f} MiB)"
                    )
                if replica.restarts > restarts:
                    restarts = replica.restarts
                if replica.rss_bytes is not None:
                    ctx.sample("rss_mb", round(replica.rss_bytes / MIB, 1))
                if self.role == "wrong" and not stopped and replica.rss_bytes is not None:
                    samples.append((ctx.now(), replica.rss_bytes / MIB))
                if not stopped and replica.rss_bytes is not None and replica.rss_bytes >= ceiling:
                    stopped = True
                    ctx.facts["ceiling_reached_s"] = ctx.now()
                    ctx.event(
                        f"safe ceiling reached ({replica.rss_bytes / MIB:.0f} MiB >= "
                        f"{ceiling / MIB:.0f} MiB): the drill stops the leaking replica"
                    )
                    ctx.runtime.set_version_replicas(service, version, 0)
            if ctx.stop.wait(0.25):
                break
        ctx.facts.update(
            {
                "peak_rss_mb": round(peak / MIB, 1),
                "oom_kills": kills,
                "restarts": restarts,
                "ceiling_mb": round(ceiling / MIB, 1),
            }
        )
        last = [r for r in ctx.runtime.replicas(service) if r.version == version]
        if last and last[0].last_reason:
            ctx.facts["last_reason"] = last[0].last_reason
        ctx.facts.update(_leak_line(samples))
        ctx.event(f"leaking replica: peak RSS {peak / MIB:.0f} MiB, {kills} OOM kills")

    def restore(self, ctx: DrillContext) -> None:
        service = self.options.service
        ctx.runtime.set_version_replicas(service, self.version, 0)
        before = ctx.facts.get("replicas_before")

        def gone() -> bool:
            return not any(r.version == self.version for r in ctx.runtime.replicas(service))

        deadline = time.monotonic() + READY_TIMEOUT
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.25)
        if isinstance(before, int) and before != 1:
            ctx.runtime.scale(service, before)

    def audit_deadline(self, ctx: DrillContext) -> float:
        # Every OOM kill is a consumer leaving its group without a word: the saga waits for
        # the rebalances, so the accepted orders get longer to finish than in other drills.
        return time.time() + 60.0

    def measure(
        self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit
    ) -> dict[str, float | int | str]:
        lesson = self.limits_lesson
        start = ctx.op_start if ctx.op_start is not None else self.op_at()
        total = window(rows, 0.0, float("inf"))
        limit = lesson.limit_of(lesson.versions["right"])
        measured: dict[str, float | int | str] = {
            key: value
            for key, value in ctx.facts.items()
            if key
            in (
                "peak_rss_mb",
                "oom_kills",
                "restarts",
                "last_reason",
                "ceiling_mb",
                "ceiling_reached_s",
                "leak_mb_per_s",
                "leak_from_s",
                "leak_from_mb",
            )
            and isinstance(value, int | float | str)
        }
        own = lesson.limit_of(self.version)
        measured.update(
            {
                "memory_limit": "none" if own is None else memory_text(own),
                "limit_mb": round((limit or 0) / MIB, 1),
                "margin_mb": lesson.margin_mb,
                "failed_requests": total.failures,
                "requests": total.requests,
                "unanswered_requests": _unanswered(rows),
                "run_s": self.duration,
            }
        )
        for row in rows:  # each second's, for the report's chart (its raw times stay here)
            p99 = percentile(
                route_latencies([row], row["t"], row["t"] + 1, lesson.neighbours), 0.99
            )
            if p99 is not None:
                ctx.sample("neighbours_p99_ms", p99, at=row["t"])
        for key, times in (
            ("neighbours_p99_ms", route_latencies(rows, start, float("inf"), lesson.neighbours)),
            (
                "neighbours_baseline_p99_ms",
                route_latencies(rows, WARMUP, start, lesson.neighbours),
            ),
            ("orders_p99_ms", route_latencies(rows, start, float("inf"), (lesson.route,))),
            (
                "completion_p99_ms",
                [t for row in rows if row["t"] >= start for t in row.get("completion_ms") or []],
            ),
        ):
            p99 = percentile(times, 0.99)
            if p99 is not None:
                measured[key] = p99
        return measured


def _leak_line(samples: list[tuple[float, float]]) -> dict[str, float]:
    """The straight line through the RSS of the leaking replica (least squares), from its
    first sample above the start-up: where it was heading when the drill stopped it."""
    points = samples[2:] if len(samples) > 4 else samples
    if len(points) < 3:
        return {}
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return {}
    slope = sum((t - mean_t) * (y - mean_y) for t, y in points) / spread
    first = points[0][0]
    return {
        "leak_mb_per_s": round(slope, 1),
        "leak_from_s": round(first, 2),
        "leak_from_mb": round(mean_y + slope * (first - mean_t), 1),
    }


def _unanswered(rows: list[dict[str, Any]]) -> int:
    """Failures without an HTTP answer (a timeout or a reset at the client): the gateway
    answers every request it cannot serve with a status, so a request it held is either
    retried elsewhere or fails visibly."""
    return sum(
        count
        for row in rows
        for message, count in (row.get("errors") or {}).items()
        if not message.split(": ", 1)[-1].startswith("HTTP ")
        and "over LOAD_MAX_OUTSTANDING" not in message
    )


class LessonLimits(Lesson):
    name = "lesson-limits"
    title = "Lesson: no resource limits"
    description = (
        "Runs one replica of an orders release that leaks memory under load beside a healthy "
        "v1 replica: first deployed without a memory limit (v4), then with one (v5), under "
        "the same open-loop load."
    )
    mistake = (
        "The mistake: no resource limits. A container without a memory limit may take all "
        "the memory of its node: a release that leaks grows until the kernel or the kubelet "
        "has to kill something, and not necessarily the culprit. Here a release keeps 6 MiB "
        "of every request it serves. Without a limit nothing stops it (the drill does, at a "
        "safe ceiling, so that this machine is never at risk); with a limit, the runtime "
        "kills exactly that replica when it crosses the line (OOMKilled), restarts it with "
        "backoff, and the healthy replica beside it serves. A limit contains the damage; it "
        "does not fix the leak: the report also shows what the restarts cost."
    )
    versions: ClassVar[dict[str, str]] = {"wrong": "v4", "right": "v5"}
    route: ClassVar[str] = "/api/orders"
    # The other services' routes: what a leak next door could slow down.
    neighbours: ClassVar[tuple[str, ...]] = ("/api/stock", "/api/notifications")
    # "Several times the limit it should have had", and where the drill stops it.
    times_limit: ClassVar[float] = 3.0
    ceiling_times: ClassVar[float] = 4.0
    # The local RSS watch reads every 50 ms and one request adds 6 MiB: the replica may go
    # past its limit by what it takes in that time. Where the kernel enforces the limit
    # (cgroup v2 memory.max, compose's mem_limit), RSS may still count a few MiB of shared
    # library pages the kernel charged to another cgroup (133 MiB under 128Mi on compose).
    margin_mb: ClassVar[float] = 24.0
    half_duration = 35.0

    def half(self, role: Role) -> LessonHalf:
        return LimitsHalf(self.options, self, role)

    def limit_of(self, version: str) -> int | None:
        return version_resources(VERSIONS_DIR, self.options.service, version).memory_limit

    def ceiling_bytes(self) -> int:
        limit = self.limit_of(self.versions["right"]) or 128 * MIB
        # Never more than a quarter of what this machine has free.
        return int(min(self.ceiling_times * limit, psutil.virtual_memory().available / 4))

    def expect(self, role: Role, measured: Mapping[str, Any]) -> list[SLO]:
        peak = _number(measured, "peak_rss_mb")
        limit = _number(measured, "limit_mb") or 0.0
        kills = int(_number(measured, "oom_kills") or 0)
        if role == "wrong":
            line = self.times_limit * limit
            grew = SLO(
                "the mistake shows: RSS grows past several times the limit it should have had",
                f">= {self.times_limit:g} x {limit:.0f} MiB = {line:.0f} MiB",
                f"peak {_shown(measured, 'peak_rss_mb', ' MiB')}, {kills} OOM kills",
                peak is not None and limit > 0 and peak >= line and kills == 0,
                f"heading up at {_shown(measured, 'leak_mb_per_s', ' MiB/s', 1)}; stopped by "
                f"the drill at its {_shown(measured, 'ceiling_mb', ' MiB')} ceiling",
            )
            return [grew, _lost(measured)]
        margin = _number(measured, "margin_mb") or self.margin_mb
        reason = str(measured.get("last_reason", "none"))
        restarts = int(_number(measured, "restarts") or 0)
        unanswered = int(_number(measured, "unanswered_requests") or 0)
        return [
            SLO(
                "RSS never above its limit by more than the margin",
                f"<= {limit:.0f} + {margin:.0f} MiB",
                f"peak {_shown(measured, 'peak_rss_mb', ' MiB')}",
                peak is not None and limit > 0 and peak <= limit + margin,
                "the highest RSS seen, restarts included (local: the supervisor's, every 50 ms)",
            ),
            SLO(
                "OOM-killed and restarted",
                ">= 1 kill, reason OOMKilled, restarted",
                f"{kills} kills, {restarts} restarts, last reason {reason}",
                kills >= 1 and restarts >= 1 and reason == "OOMKilled",
            ),
            SLO(
                "the requests it held were retried or failed visibly",
                "0 requests without an answer",
                f"{unanswered} without an answer; "
                f"{_shown(measured, 'failed_requests')} failed with a status",
                unanswered == 0,
                "the gateway retries what it may on the healthy replica, else answers 502/503",
            ),
            _lost(measured),
        ]

    def comparison(self) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
        return [
            (
                "peak RSS of the leaking replica",
                "highest seen by the supervisor",
                lambda m: _shown(m, "peak_rss_mb", " MiB"),
            ),
            ("memory limit", "its version file", lambda m: str(m.get("memory_limit", "n/a"))),
            ("OOM kills / restarts", "of the leaking replica", lambda m: _kills_shown(m)),
            (
                "where the line was heading",
                "leak rate; RSS at the end of the run",
                lambda m: _projection_shown(m),
            ),
            (
                "failed requests",
                "the whole run",
                lambda m: f"{_shown(m, 'failed_requests')} of {_shown(m, 'requests')}",
            ),
            ("orders p99", "/api/orders, from the operation on", lambda m: _ms_shown(m, "orders")),
            (
                "neighbours' p99",
                "/api/stock and /api/notifications, from the operation on",
                lambda m: (
                    _shown(m, "neighbours_p99_ms", " ms")
                    + f" (before: {_shown(m, 'neighbours_baseline_p99_ms', ' ms')})"
                ),
            ),
            (
                "order completion p99",
                "POST to CONFIRMED/CANCELLED, from the operation on",
                lambda m: _shown(m, "completion_p99_ms", " ms"),
            ),
            ("orders lost", "accepted, not terminal", lambda m: _shown(m, "orders_lost")),
        ]

    def charts(self) -> list[Chart]:
        service = self.options.service
        versions = self.versions

        def rss(row: Mapping[str, Any]) -> float | None:
            return next(
                (
                    v
                    for v in (
                        _nested(row, "rss_mb", service, version) for version in versions.values()
                    )
                    if v is not None
                ),
                None,
            )

        def lines(summaries: Mapping[Role, Mapping[str, Any]]) -> list[tuple[str, float]]:
            right = summaries["right"]
            limit = _number(right, "limit_mb")
            marks = []
            if limit:
                marks.append((f"limit {limit:.0f} MiB", limit))
                marks.append((f"{self.times_limit:g} x limit", self.times_limit * limit))
            ceiling = _number(summaries["wrong"], "ceiling_mb")
            if ceiling:
                marks.append((f"drill's ceiling {ceiling:.0f} MiB", ceiling))
            return marks

        def projection(summaries: Mapping[Role, Mapping[str, Any]]) -> list[tuple[float, float]]:
            wrong = summaries["wrong"]
            rate, t0, y0 = (
                _number(wrong, k) for k in ("leak_mb_per_s", "leak_from_s", "leak_from_mb")
            )
            end = _number(wrong, "run_s")
            if rate is None or t0 is None or y0 is None or end is None:
                return []
            return [(t0, y0), (end, y0 + rate * (end - t0))]

        return [
            Chart(
                "rss",
                "Memory of the leaking replica",
                "Resident memory (RSS) of the leaking release's replica, as the drill read it "
                "four times a second; dashed: the straight line its growth was on when the "
                "drill stopped it.",
                "MiB",
                rss,
                series="rss_mb",
                lines=lines,
                projection=projection,
            ),
            Chart(
                "failures",
                "Failed requests",
                "Failed requests per second, both runs on the same clock.",
                "failed requests per second",
                lambda row: float(row.get("failures") or 0),
            ),
            Chart(
                "neighbours",
                "p99 of the neighbours",
                "The 99th percentile of each second's response times of the other services' "
                "routes (/api/stock, /api/notifications).",
                "ms",
                lambda _row: None,  # the raw times are not in the report: see measure()
                series="neighbours_p99_ms",
            ),
            Chart(
                "completion",
                "Order completion p99",
                "The 99th percentile of the time from POST to a final state, of the orders "
                "that finished in each second.",
                "ms (log scale)",
                lambda row: row.get("completion_p99_ms"),
                log=True,
            ),
        ]

    def fixes(self) -> list[Fix]:
        service, version = self.options.service, self.versions["right"]
        resources = version_resources(VERSIONS_DIR, service, version)
        limit = resources.memory_limit
        return [
            Fix(
                f"infra/versions/{service}-{version}.env (this platform)",
                "dotenv",
                f"LIMITS_MEMORY={memory_text(limit) if limit else 'none'}\n"
                + (
                    f"REQUESTS_MEMORY={memory_text(resources.memory_request)}\n"
                    if resources.memory_request
                    else ""
                ),
            ),
            Fix(
                "Kubernetes: the container of the Deployment",
                "yaml",
                _yaml({"resources": resources.k8s()}),
            ),
            Fix(
                "docker-compose.yml: the service",
                "yaml",
                _yaml({"services": {service: resources.compose()}}),
            ),
        ]


def _kills_shown(measured: Mapping[str, Any]) -> str:
    return f"{_shown(measured, 'oom_kills')} / {_shown(measured, 'restarts')}" + (
        f" ({measured['last_reason']})" if measured.get("last_reason") else ""
    )


def _projection_shown(measured: Mapping[str, Any]) -> str:
    rate, t0, y0, end = (
        _number(measured, k) for k in ("leak_mb_per_s", "leak_from_s", "leak_from_mb", "run_s")
    )
    if rate is None or t0 is None or y0 is None or end is None:
        return "n/a"
    return f"{rate:.1f} MiB/s; {y0 + rate * (end - t0):.0f} MiB at {end:.0f} s"


def _ms_shown(measured: Mapping[str, Any], prefix: str) -> str:
    return _shown(measured, f"{prefix}_p99_ms", " ms")


LESSONS: dict[str, type[Lesson]] = {lesson.name: lesson for lesson in (LessonProbes, LessonLimits)}


# -- lesson-fat-image: the same service on a fat base, then on the slim one (compose only) -----
# Self-contained, like the persistence block below: its imports are here.
from infra.compose import images as compose_images  # noqa: E402
from infra.compose.lone import LoneReplica, image_size, installed_packages  # noqa: E402


class FatImageHalf(LessonHalf):
    """Build orders on one base, start it beside the project's replicas under load, measure."""

    name = "lesson-fat-image"
    title = "Lesson: fat containers"
    description = "One half of lesson-fat-image: orders built on a base, started under load."
    min_duration = 20.0
    # How long the started replica is watched (RSS) once it is ready.
    watch_s: ClassVar[float] = 8.0
    _replica: LoneReplica | None = None

    def op_at(self) -> float:
        return 5.0

    @property
    def fat_lesson(self) -> LessonFatImage:
        assert isinstance(self.lesson, LessonFatImage)
        return self.lesson

    def _compose(self, ctx: DrillContext) -> Any:
        from infra.compose.runtime import ComposeRuntime

        if not isinstance(ctx.runtime, ComposeRuntime):
            raise RuntimeFailure(LessonFatImage.only_compose(ctx.runtime.name))
        return ctx.runtime

    def prepare(self, ctx: DrillContext) -> None:
        runtime = self._compose(ctx)
        ensure_replicas(ctx, self.options.service, 1)
        variant = self.fat_lesson.variants[self.role]
        ctx.facts["variant"] = variant
        ctx.facts["operation"] = f"build {self.options.service} on the {variant} base, start it"
        ctx.facts["image"] = compose_images.image_name(
            f"{self.options.service}-{variant}-lesson", runtime.project.compose_env()
        )
        # The bases before the load: a missing one is made here (debootstrap: minutes), and
        # cached by the engine as the project's own slim base is.
        env = runtime.project.compose_env()
        state_dir = runtime.mesh_home / "docker"
        base = env.get("BASE_IMAGE", "").strip() or compose_images.DEFAULT_BASE
        if base != "local" and not compose_images.image_exists(base):
            base = "local"  # what `meshctl up` falls back to where no registry answers
        ctx.facts["base"] = compose_images.resolve_base(base, state_dir, ctx.say)
        ctx.facts["final_base"] = (
            compose_images.resolve_fat_base(base, state_dir, ctx.say)
            if variant == "fat"
            else ctx.facts["base"]
        )
        # Built before the load, as a CI builds away from the nodes that serve: on a small
        # machine a build under load costs the platform its CPU (measured: 10-40 % of the
        # requests failed while it ran, with either base), which is not this lesson.
        image, final = ctx.facts["image"], ctx.facts["final_base"]
        ctx.say(f"  building {image} FROM {final} (before the load)")
        build_s = compose_images.build_lesson_image(
            image, base=base, final_base=final, state_dir=state_dir, environ=env
        )
        ctx.facts["build_s"] = round(build_s, 1)
        made = compose_images.base_build_seconds(final)
        if made is not None:
            ctx.facts["base_build_s"] = made
        ctx.facts["image_mb"] = round(image_size(image) / 1e6, 1)
        ctx.facts["packages"] = installed_packages(image)
        ctx.say(
            f"  built in {build_s:.1f}s: {ctx.facts['image_mb']:.0f} MB, "
            f"{ctx.facts['packages']} packages"
        )

    def operate(self, ctx: DrillContext) -> None:
        runtime = self._compose(ctx)
        image = ctx.facts["image"]
        service = self.options.service
        replica = LoneReplica(
            runtime.fleet,
            service,
            image,
            f"{runtime.project.name}-lesson-{service}-{ctx.facts['variant']}",
        )
        ctx.facts["container"] = replica.name
        self._replica = replica
        replica.start()
        ctx.event(f"started {replica.name} ({replica.address})")
        version = stable_version(ctx, service)

        def ready() -> bool:
            if replica.state() not in ("created", "running"):
                raise RuntimeFailure(f"{replica.name} exited before it was ready")
            return replica.passing(version)

        ctx.wait_until(ready, timeout=120, what=f"{replica.name} passing in Consul")
        ctx.facts["ready_s"] = round(time.monotonic() - replica.started, 1)
        ctx.event(f"{replica.name} ready (passing in Consul) after {ctx.facts['ready_s']}s")
        rss: list[float] = []
        watched_until = time.monotonic() + self.watch_s
        while time.monotonic() < watched_until and not ctx.stop.is_set():
            value = replica.rss_bytes()
            if value is not None:
                rss.append(value / MIB)
                ctx.sample("rss_mb", round(value / MIB, 1))
            ctx.stop.wait(1.0)
        if rss:
            ctx.facts["rss_mb"] = round(max(rss), 1)
        replica.remove()
        ctx.event(f"{replica.name} stopped (SIGTERM: drained and deregistered)")

    def restore(self, ctx: DrillContext) -> None:
        if self._replica is not None:
            self._replica.remove()

    def measure(
        self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit
    ) -> dict[str, float | int | str]:
        total = window(rows, 0.0, float("inf"))
        measured: dict[str, float | int | str] = {
            "variant": str(ctx.facts.get("variant", self.role)),
            "final_base": str(ctx.facts.get("final_base", "")),
            "failed_requests": total.failures,
            "requests": total.requests,
        }
        for key in ("image_mb", "packages", "build_s", "base_build_s", "ready_s", "rss_mb"):
            if isinstance(ctx.facts.get(key), int | float):
                measured[key] = ctx.facts[key]
        if total.p99_ms is not None:
            measured["p99_ms"] = total.p99_ms
        return measured


class LessonFatImage(Lesson):
    name = "lesson-fat-image"
    title = "Lesson: fat containers"
    description = (
        "Builds orders on a full Debian base with the build tools, then on the slim base (the "
        "same venv, the same Dockerfile otherwise), each before its run; starts each beside the "
        "running replicas under the same load, and compares image size, build time, "
        "start-to-ready, RSS and installed packages."
    )
    mistake = (
        "The mistake: fat containers. An image FROM a full distribution (python:3.12, "
        "ubuntu, debian with build-essential) ships a compiler, headers, git, curl and "
        "hundreds of packages the service never runs. It is bigger to build, push, pull "
        "and keep on every node, and every one of those packages is attack surface a "
        "scanner reports and an intruder can use (a shell, a compiler, a downloader). Here "
        "the same orders service, the same venv, is put on the fat base and on the slim "
        "one, and both are started beside the running replicas under the same load."
    )
    runtimes: ClassVar[tuple[str, ...]] = ("compose",)
    variants: ClassVar[dict[str, str]] = {"wrong": "fat", "right": "slim"}
    # The contrast the lesson must measure: the fat image this much bigger, with this many
    # more packages (debootstrap's buildd variant and the build tools: several hundred).
    min_size_ratio: ClassVar[float] = 1.5
    min_extra_packages: ClassVar[int] = 50
    half_duration = 30.0

    @staticmethod
    def only_compose(runtime: str) -> str:
        return (
            f"lesson-fat-image builds and runs Docker images: it runs on the compose runtime "
            f"only, not on {runtime} (meshctl drill lesson-fat-image --runtime compose)"
        )

    def half(self, role: Role) -> LessonHalf:
        return FatImageHalf(self.options, self, role)

    def expect(self, role: Role, measured: Mapping[str, Any]) -> list[SLO]:
        ready = _number(measured, "ready_s")
        return [
            SLO(
                f"the {measured.get('variant', role)} image built, started and got ready",
                "passing in Consul",
                "n/a" if ready is None else f"after {ready:.1f}s",
                ready is not None and _number(measured, "image_mb") is not None,
            )
        ]

    def judge(self, wrong: Mapping[str, Any], right: Mapping[str, Any]) -> list[SLO]:
        slos = super().judge(wrong, right)
        fat, slim = wrong.get("summary", {}), right.get("summary", {})
        fat_mb, slim_mb = _number(fat, "image_mb"), _number(slim, "image_mb")
        ratio = fat_mb / slim_mb if fat_mb and slim_mb else None
        slos.append(
            SLO(
                "the contrast: the fat image is bigger",
                f">= {self.min_size_ratio:g} x the slim image",
                f"{_shown(fat, 'image_mb', ' MB')} vs {_shown(slim, 'image_mb', ' MB')}"
                + ("" if ratio is None else f" ({ratio:.1f} x)"),
                ratio is not None and ratio >= self.min_size_ratio,
            )
        )
        fat_n, slim_n = _number(fat, "packages"), _number(slim, "packages")
        extra = fat_n - slim_n if fat_n is not None and slim_n is not None else None
        slos.append(
            SLO(
                "the contrast: the fat image installs more packages (attack surface)",
                f">= {self.min_extra_packages} more",
                f"{_shown(fat, 'packages')} vs {_shown(slim, 'packages')}"
                + ("" if extra is None else f" ({extra:+.0f})"),
                extra is not None and extra >= self.min_extra_packages,
            )
        )
        return slos

    def comparison(self) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
        return [
            ("final base", "FROM of the image's last stage", lambda m: str(m.get("final_base"))),
            ("image size", "docker image inspect", lambda m: _shown(m, "image_mb", " MB")),
            ("packages", "dpkg-query -W (installed)", lambda m: _shown(m, "packages")),
            (
                "build",
                "its last stage (the venv from the layer cache)",
                lambda m: _shown(m, "build_s", " s", 1),
            ),
            (
                "base image made in",
                "debootstrap (local bases only)",
                lambda m: _shown(m, "base_build_s", " s"),
            ),
            (
                "start to ready",
                "docker run -> passing in Consul (no registry: no pull)",
                lambda m: _shown(m, "ready_s", " s", 1),
            ),
            ("RSS", "the app process, max while watched", lambda m: _shown(m, "rss_mb", " MiB", 1)),
            (
                "failed requests",
                "the whole run (both bases serve)",
                lambda m: f"{_shown(m, 'failed_requests')} of {_shown(m, 'requests')}",
            ),
            ("p99", "the whole run", lambda m: _shown(m, "p99_ms", " ms")),
        ]

    def charts(self) -> list[Chart]:
        return [
            Chart(
                "rss",
                "Memory (RSS) of the started replica",
                "RSS of the app process of the replica started from each image, from the "
                "moment it is ready (seconds since the run's load started).",
                "MiB",
                lambda _row: None,
                series="rss_mb",
            ),
            Chart(
                "p99",
                "p99 latency under the same load",
                "The 99th percentile of the response times of each second, while the replica of "
                "each image starts and serves beside the running replicas.",
                "ms (log scale)",
                lambda row: row.get("p99_ms"),
                log=True,
            ),
        ]

    def fixes(self) -> list[Fix]:
        service = self.options.service
        return [
            Fix(
                f"services/{service}/Dockerfile: build on a full image, run on a slim one",
                "dockerfile",
                "ARG BASE_IMAGE=python:3.12-slim\n"
                "FROM ${BASE_IMAGE} AS builder\n"
                "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip wheel ... "
                "&& /opt/venv/bin/pip install ...\n\n"
                "# the image: the venv on the slim base, no compiler, no apt-get\n"
                "FROM ${BASE_IMAGE}\n"
                "COPY --from=builder /opt/venv /opt/venv\n"
                "USER 10001:10001\n",
            ),
            Fix(
                "docker-compose.yml: the service builds FROM the slim base",
                "yaml",
                _yaml(
                    {
                        "services": {
                            service: {
                                "build": {
                                    "context": ".",
                                    "dockerfile": f"services/{service}/Dockerfile",
                                    "args": {"BASE_IMAGE": "python:3.12-slim"},
                                }
                            }
                        }
                    }
                ),
            ),
        ]


LESSONS[LessonFatImage.name] = LessonFatImage


# -- persistence: a Redis crash (issue 21) ----------------------------------------------------
# Self-contained: what it imports beyond the top of the file is imported here.
import json  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

from infra.embedded.persistence import FSYNC_WINDOW, REDIS_MODES  # noqa: E402
from infra.runtime import Runtime  # noqa: E402
from infra.runtime.models import GatewayInfo  # noqa: E402
from loadtests.drills.audit import audit_orders  # noqa: E402
from loadtests.drills.engine import Say  # noqa: E402
from loadtests.drills.lesson import Contrast  # noqa: E402


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
    # Until every replica passes its check again (not an SLO: the SLOs judge accepting again
    # and finishing orders): a container's healthcheck and Consul's take a few rounds.
    ready_within: ClassVar[float] = 90.0

    def prepare(self, ctx: DrillContext) -> None:
        # options.persistence (the persistence lesson runs the drill with off, then
        # everysec): Redis is switched to it for the drill, and back after.
        wanted = self.options.persistence
        if wanted is not None:
            ctx.facts["persistence_before"] = self._mode(ctx)
            ctx.runtime.set_redis_persistence(wanted)
            # On compose the switch recreates Redis's container: the load starts once every
            # service has reconnected, so the crash is the only outage measured.
            ctx.wait_until(lambda: platform_ready(ctx.runtime), self.ready_within, "ready again")
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

        waiting: list[str] = []

        def ready() -> bool:
            waiting[:] = not_ready(ctx.runtime)
            return not waiting

        try:
            ctx.wait_until(ready, self.ready_within, "every service ready again")
        except RuntimeFailure as exc:
            raise RuntimeFailure(f"{exc} (still not ready: {', '.join(waiting)})") from None
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


def platform_ready(runtime: Runtime) -> bool:
    """The gateway and every replica of every service healthy."""
    return not not_ready(runtime)


def not_ready(runtime: Runtime) -> list[str]:
    """What is not healthy yet: the gateway, services as ``name healthy/replicas``."""
    state = runtime.status()
    out = [] if state.gateway is not None and state.gateway.healthy else ["the gateway"]
    return out + [
        f"{s.name} {s.healthy}/{s.replicas}" for s in state.services if s.healthy < s.replicas
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


# -- lesson-persistence: a Redis crash without persistence, then with it (issue 21) -----------
class PersistenceHalf(LessonHalf, RedisCrash):
    """One half of lesson-persistence: the redis-crash drill at one persistence mode."""

    name = "lesson-persistence"
    title = "Lesson: state without persistence"
    description = "One half of lesson-persistence: Redis killed under load, then started again."
    min_duration = 15.0

    def measure(
        self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit
    ) -> dict[str, float | int | str]:
        figures = self.measure_crash(ctx, audit)
        # Lost orders against when they were accepted: the chart of the lesson.
        lost = set(audit.lost)
        count = 0
        for order_id, at in sorted(audit.accepted_at.items(), key=lambda kv: kv[1]):
            count += order_id in lost
            ctx.sample("orders_lost", float(count), at=ctx.rel(at))
        if "crashed_at" in ctx.facts:
            figures["crash_at_s"] = ctx.rel(float(ctx.facts["crashed_at"]))
        return figures


class LessonPersistence(Lesson):
    name = "lesson-persistence"
    title = "Lesson: state without persistence"
    description = (
        "Kills Redis with SIGKILL under load and starts it again a second later: first with "
        "persistence off, then with the append-only file (appendfsync everysec), same load."
    )
    mistake = (
        "The mistake: state kept only in memory. A store that writes nothing to disk loses "
        "everything when its process dies: here every order, the stock and the outbox are in "
        "Redis, so a crash forgets every order the shop has already answered 202 for, and a "
        "customer who asks about one gets a 404. With an append-only file (a volume on compose, "
        "a persistent volume on Kubernetes) the same crash loses nothing it had answered: Redis "
        "writes each change to the file before it replies, and everysec flushes the file to "
        "disk every second, so only a crash of the whole machine could lose the last second."
    )
    modes: ClassVar[dict[str, str]] = {"wrong": "off", "right": "everysec"}
    half_duration = 30.0

    def contrasts(self, runtime: Runtime, say: Say) -> list[Contrast]:
        """On compose, also ``docker compose down`` then ``up``, without the named volume
        and then with it (:func:`volume_contrast`)."""
        from infra.compose.runtime import ComposeRuntime

        return [volume_contrast(runtime, say)] if isinstance(runtime, ComposeRuntime) else []

    def half(self, role: Role) -> LessonHalf:
        options = dataclasses.replace(self.options, persistence=self.modes[role])
        return PersistenceHalf(options, self, role)

    def expect(self, role: Role, measured: Mapping[str, Any]) -> list[SLO]:
        if not measured.get("redis_crashed"):
            return [SLO("redis crashed and started again", "both", "not done", False)]
        lost = int(_number(measured, "orders_lost_outside_window") or 0)
        before = int(_number(measured, "orders_accepted_before_window") or 0)
        took = float(_number(measured, "accepting_again_s") or -1.0)
        stuck = int(_number(measured, "orders_stuck_after_restart") or 0)
        resumed = SLO(
            "the shop takes orders again by itself and finishes them",
            "accepting again, every order accepted after the restart terminal",
            f"accepting after {took:.1f}s, {stuck} stuck" if took >= 0 else "not accepting",
            took >= 0 and stuck == 0,
        )
        if role == "wrong":
            harm = SLO(
                "the mistake shows: orders answered 202 before the crash are lost",
                "> 0 lost",
                f"{lost} of {before} lost",
                lost > 0,
                "persistence off: Redis came back empty",
            )
            return [harm, resumed]
        kept = SLO(
            "nothing answered before the fsync window is lost",
            "0 lost",
            f"{lost} of {before} lost",
            lost == 0 and before > 0,
            f"{_shown(measured, 'orders_lost_in_window')} lost inside the "
            f"{_shown(measured, 'fsync_window_s', ' s')} window",
        )
        return [kept, resumed]

    def comparison(self) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
        return [
            ("persistence", "Redis's own setting", lambda m: str(m.get("persistence", "-"))),
            (
                "orders lost",
                "accepted before the crash's fsync window",
                lambda m: (
                    f"{_shown(m, 'orders_lost_outside_window')} of "
                    f"{_shown(m, 'orders_accepted_before_window')}"
                ),
            ),
            ("orders lost", "inside the window", lambda m: _shown(m, "orders_lost_in_window")),
            ("orders lost", "all accepted, not terminal", lambda m: _shown(m, "orders_lost")),
            (
                "accepting again",
                "after Redis is back",
                lambda m: _shown(m, "accepting_again_s", " s", 1),
            ),
            (
                "stuck after the restart",
                "accepted after, not terminal",
                lambda m: _shown(m, "orders_stuck_after_restart"),
            ),
        ]

    def charts(self) -> list[Chart]:
        return [
            Chart(
                "lost",
                "Orders lost, by when they were accepted",
                "How many of the orders accepted up to each moment were lost (cumulative): "
                "without persistence every order accepted before the crash is; with it, none.",
                "orders lost",
                lambda row: None,
                step=True,
                series="orders_lost",
            ),
            Chart(
                "failures",
                "Failed requests",
                "Failed requests per second: while Redis is down the services answer 503.",
                "failed requests per second",
                lambda row: float(row.get("failures") or 0),
            ),
            Chart(
                "p99",
                "p99 latency",
                "The 99th percentile of the response times of each second: the crash costs "
                "both runs the same second or two; only what is kept differs.",
                "ms (log scale)",
                lambda row: row.get("p99_ms"),
                log=True,
            ),
        ]

    def fixes(self) -> list[Fix]:
        return [
            Fix(
                "The local runtime (the default since this lesson)",
                "dotenv",
                "# .mesh/redis/ keeps an append-only file; always, everysec or off\n"
                "MESH_REDIS_PERSISTENCE=everysec\n",
            ),
            Fix(
                "docker-compose.yml: Redis on a named volume",
                "yaml",
                _yaml(
                    {
                        "services": {
                            "redis": {
                                "command": [
                                    "redis-server",
                                    "--appendonly",
                                    "yes",
                                    "--appendfsync",
                                    "everysec",
                                ],
                                "volumes": ["redis-data:/data"],
                            }
                        },
                        "volumes": {"redis-data": {}},
                    }
                ),
            ),
            Fix(
                "Kubernetes: the Redis StatefulSet keeps /data on a persistent volume",
                "yaml",
                _yaml(
                    {
                        "volumeClaimTemplates": [
                            {
                                "metadata": {"name": "data"},
                                "spec": {
                                    "accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": "1Gi"}},
                                },
                            }
                        ]
                    }
                ),
            ),
        ]


LESSONS[LessonPersistence.name] = LessonPersistence


# -- lesson-persistence on compose: down then up, without and with the named volume ----------
VOLUME_ORDERS = 20  # orders placed (and finished) before each `down`
VOLUME_SKU = "SKU-001"


def volume_contrast(runtime: Runtime, say: Say) -> Contrast:
    """``docker compose down`` then ``up``, twice: first with Redis's /data on an anonymous
    volume (what a compose file without the volume lines gives it: an override, so the
    session's named volume is not touched), then on the named volume. Before each ``down``,
    :data:`VOLUME_ORDERS` orders are placed and finished; after ``up``, each is looked up
    again (404: lost), and the stock of :data:`VOLUME_SKU` is read before and after (the
    restock may refill it in between, so it is shown, not judged)."""
    from infra.compose.runtime import ComposeRuntime

    assert isinstance(runtime, ComposeRuntime)
    events: list[str] = []

    def note(message: str) -> None:
        events.append(message)
        say(f"  {message}")

    sides: dict[str, dict[str, Any]] = {}
    try:
        for side, without in (("wrong", True), ("right", False)):
            what = "without the named volume" if without else "with the named volume"
            note(f"down then up {what}")
            if without:
                runtime.redis_without_volume(True, note)
            elif "wrong" in sides:
                runtime.redis_without_volume(False, note)
            sides[side] = _down_up_once(runtime, note)
    finally:
        if "right" not in sides:
            runtime.redis_without_volume(False, note)  # the named volume back, whatever broke

    def kept(m: Mapping[str, Any]) -> str:
        return f"{m['kept']} of {m['placed']}"

    rows = [
        {
            "measure": "orders kept",
            "how": f"finished before down, found after up ({VOLUME_ORDERS} placed)",
            "wrong": kept(sides["wrong"]),
            "right": kept(sides["right"]),
        },
        {
            "measure": "orders lost",
            "how": "answered 404 after up",
            "wrong": str(sides["wrong"]["gone"]),
            "right": str(sides["right"]["gone"]),
        },
        {
            "measure": "payments kept",
            "how": "found before down -> after up",
            "wrong": f"{sides['wrong']['payments_before']} -> {sides['wrong']['payments_after']}",
            "right": f"{sides['right']['payments_before']} -> {sides['right']['payments_after']}",
        },
        {
            "measure": f"stock of {VOLUME_SKU}",
            "how": "available before down -> after up (a new Redis is seeded with 1000; the "
            "restock brings it back to 1000 every 30 s, so both may read 1000)",
            "wrong": f"{sides['wrong']['stock_before']} -> {sides['wrong']['stock_after']}",
            "right": f"{sides['right']['stock_before']} -> {sides['right']['stock_after']}",
        },
        {
            "measure": "down then up",
            "how": "seconds until every replica passes again",
            "wrong": f"{sides['wrong']['seconds']:.0f} s",
            "right": f"{sides['right']['seconds']:.0f} s",
        },
    ]
    wrong, right = sides["wrong"], sides["right"]
    slos = [
        SLO(
            "without the volume, down then up forgets the orders",
            "> 0 lost",
            f"{wrong['gone']} of {wrong['placed']} lost",
            wrong["placed"] > 0 and wrong["gone"] > 0,
        ),
        SLO(
            "with the named volume, down then up keeps every order",
            "0 lost, all found",
            f"{right['kept']} of {right['placed']} kept",
            right["placed"] > 0 and right["kept"] == right["placed"],
            f"{right['gone']} lost" if right["gone"] else "",
        ),
    ]
    return Contrast(
        key="volume",
        title="docker compose down, then up: without and with the named volume",
        caption=(
            "The whole stack removed and created again, as `docker compose down` then `up` "
            "do. Without a volume line Redis's /data is the anonymous volume of that one "
            "container, and the next `up` starts from a new, empty one; a named volume "
            "outlives the containers (only `down -v` removes it)."
        ),
        columns=("without the named volume", "with the named volume (redis-data:/data)"),
        rows=rows,
        slos=slos,
        events=events,
    )


def _down_up_once(runtime: Any, note: Callable[[str], None]) -> dict[str, Any]:
    runtime_ready(runtime)
    gateway = runtime.gateway()
    if gateway is None:
        raise RuntimeFailure("no gateway to place the lesson's orders")
    ids = [_place_order(gateway) for _ in range(VOLUME_ORDERS)]
    audit = audit_orders(gateway, ids, time.time() + 60)
    if audit.lost:
        raise RuntimeFailure(f"{len(audit.lost)} of the lesson's orders never finished")
    stock_before = _available(gateway, VOLUME_SKU)
    payments_before = _payments(gateway, ids)
    note(
        f"{len(ids)} orders finished, {payments_before} payments; "
        f"{VOLUME_SKU} available: {stock_before}"
    )
    # The steps of down and up, not every line meshctl up prints (images, waits).
    steps = ("compose -p", "all healthy")
    seconds = runtime.down_up(lambda line: note(line) if line.startswith(steps) else None)
    runtime_ready(runtime)
    gateway = runtime.gateway()
    assert gateway is not None
    found = audit_orders(gateway, ids, time.time() + 20)
    gone = sum(1 for i in ids if found.unreadable.get(i) == "HTTP 404")
    stock_after = _available(gateway, VOLUME_SKU)
    payments_after = _payments(gateway, ids)
    note(
        f"after up ({seconds:.0f}s): {len(found.terminal)} of {len(ids)} orders found, "
        f"{payments_after} payments; {VOLUME_SKU} available: {stock_after}"
    )
    return {
        "payments_before": payments_before,
        "payments_after": payments_after,
        "placed": len(ids),
        "kept": len(found.terminal),
        "gone": gone,
        "stock_before": stock_before,
        "stock_after": stock_after,
        "seconds": seconds,
    }


def runtime_ready(runtime: Runtime, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not platform_ready(runtime):
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the platform not ready {timeout:.0f}s after the restart")
        time.sleep(0.5)


def _call(gateway: GatewayInfo, method: str, path: str, body: Any = None) -> Any:
    """One gateway call, retried while it answers 429/503 or not at all (a stack just up)."""
    headers = {"X-API-Key": gateway.api_key, "Content-Type": "application/json"}
    if method == "POST":
        headers["Idempotency-Key"] = uuid.uuid4().hex  # one per order: a retry creates it once
    data = None if body is None else json.dumps(body).encode()
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(
            gateway.url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.loads(answer.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or time.monotonic() > deadline:
                raise RuntimeFailure(f"{method} {path}: HTTP {exc.code}") from None
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"{method} {path}: {exc}") from None
        time.sleep(0.3)


def _place_order(gateway: GatewayInfo) -> str:
    body = {"customer_id": "c-volume-lesson", "items": [{"sku": VOLUME_SKU, "quantity": 1}]}
    return str(_call(gateway, "POST", "/api/orders", body)["id"])


def _payments(gateway: GatewayInfo, ids: list[str]) -> int:
    """How many of the orders have a payment (a 404 is none: never charged, or forgotten)."""
    found = 0
    for order_id in ids:
        try:
            _call(gateway, "GET", f"/api/payments/{order_id}")
        except RuntimeFailure as exc:
            if "HTTP 404" not in str(exc):
                raise
            continue
        found += 1
    return found


def _available(gateway: GatewayInfo, sku: str) -> int | None:
    value = _call(gateway, "GET", f"/api/stock/{sku}").get("available")
    return int(value) if isinstance(value, int) else None
