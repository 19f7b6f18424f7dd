"""How every drill runs: prepare, start the load, operate at a set time, sample every second,
audit the accepted orders, judge the SLOs, write the report.

A drill only says what its operation is and how it is judged (``loadtests/drills/catalog.py``);
everything it touches goes through the :class:`~infra.runtime.Runtime` interface, so the same
drill runs on every runtime that implements it.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from infra.runtime import Runtime, RuntimeFailure
from infra.runtime.models import GatewayInfo
from loadtests.drills.audit import OrderAudit, accepted_times, audit_orders
from loadtests.drills.load import LoadPlan, LocustRun
from loadtests.drills.timeline import PlatformSampler, Window, build_rows, window

Say = Callable[[str], None]
WARMUP = 3.0  # seconds of load before the baseline window opens (connections, first users)
AUDIT_TIME = 30.0  # default wait for accepted orders to finish after the load


def say_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DrillOptions:
    duration: float | None = None  # seconds of load; each drill has its default
    service: str = "orders"
    version: str | None = None
    out: Path | None = None
    # redis-crash: the Redis persistence to rehearse (switched for the drill and back after);
    # None: whatever the platform runs with.
    persistence: str | None = None
    # The runtime the drill runs on: autoscale sizes its spike to it (compose: half-core caps).
    runtime: str = "local"


@dataclass
class SLO:
    name: str
    threshold: str
    measured: str
    passed: bool
    detail: str = ""


@dataclass
class DrillContext:
    """What a running drill knows; the operation thread writes events and facts here."""

    runtime: Runtime
    gateway: GatewayInfo
    options: DrillOptions
    say: Say
    started_at: float = 0.0  # unix time the load started
    events: list[dict[str, Any]] = field(default_factory=list)
    op_start: float | None = None  # seconds since started_at
    op_end: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    # Measures a drill samples at its own pace (faster than the timeline's second):
    # name -> [[seconds since the load started, value], ...]
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        return round(time.time() - self.started_at, 2)

    def rel(self, unix: float) -> float:
        return round(unix - self.started_at, 2)

    def sample(self, name: str, value: float, at: float | None = None) -> None:
        """Add a point (``at``: seconds since the load started, by default now)."""
        self.series.setdefault(name, []).append([self.now() if at is None else at, value])

    def event(self, message: str, at: float | None = None) -> None:
        t = self.now() if at is None else self.rel(at)
        self.events.append({"t": t, "message": message})
        self.say(f"  {t:6.1f}s  * {message}")

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` every 0.25 s; raise a one-line failure after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() >= deadline:
                raise RuntimeFailure(f"{what}: not within {timeout:.0f}s")
            if self.stop.wait(0.25):
                raise RuntimeFailure(f"{what}: drill stopped")


class Drill(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    default_duration: ClassVar[float] = 60.0
    min_duration: ClassVar[float] = 25.0
    rate: ClassVar[float] = 20.0  # arrivals per second

    def __init__(self, options: DrillOptions) -> None:
        self.options = options
        self.duration = options.duration or self.default_duration
        if self.duration < self.min_duration:
            raise RuntimeFailure(
                f"drill {self.name} needs --duration of at least {self.min_duration:g}s"
            )

    # -- what a drill defines ------------------------------------------------------------------
    def plan(self) -> LoadPlan:
        return LoadPlan(rate=self.rate)

    def op_at(self) -> float:
        """When the operation starts, in seconds since the load started."""
        # A longer baseline makes its p99 steadier: at least 10 s, at most 15 s.
        return min(15.0, max(10.0, self.duration * 0.3))

    def prepare(self, ctx: DrillContext) -> None:
        """Before the load: bring the platform to the drill's starting point."""
        return None

    @abstractmethod
    def operate(self, ctx: DrillContext) -> None:
        """The operation (runs in a thread at :meth:`op_at`); returns once it is over."""

    def restore(self, ctx: DrillContext) -> None:
        """After the drill, success or not: undo what :meth:`prepare` changed."""
        return None

    @abstractmethod
    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        """The drill's SLO verdicts."""

    def audit_deadline(self, ctx: DrillContext) -> float:
        return time.time() + AUDIT_TIME

    def params(self) -> dict[str, Any]:
        return {
            "service": self.options.service,
            "duration_s": self.duration,
            "operation_at_s": self.op_at(),
            "load": self.plan().describe(),
        }

    def title_for(self, ctx: DrillContext) -> str:
        return self.title

    # -- helpers shared by drills --------------------------------------------------------------
    @staticmethod
    def baseline(rows: list[dict[str, Any]], ctx: DrillContext) -> Window:
        end = ctx.op_start if ctx.op_start is not None else rows[-1]["t"] if rows else 0.0
        return window(rows, WARMUP, end)


@dataclass
class DrillResult:
    report: dict[str, Any]
    folder: Path
    passed: bool


def run_drill(drill: Drill, runtime: Runtime, folder: Path, say: Say = say_stderr) -> DrillResult:
    status = runtime.status()
    if status.gateway is None or not status.gateway.healthy:
        raise RuntimeFailure(f"the platform is not running on {runtime.name}: run `make up`")
    ctx = DrillContext(runtime, status.gateway, drill.options, say)
    folder.mkdir(parents=True, exist_ok=True)
    plan = drill.plan()
    load = LocustRun(plan, drill.duration, status.gateway, folder)
    sampler = PlatformSampler(runtime)
    operation = _Operation(drill, ctx)
    audit = OrderAudit()
    wall_started = time.time()
    say(f"drill {drill.name} on {runtime.name}: {drill.title_for(ctx)}")
    say(f"  load: {plan.describe()} for {drill.duration:g}s; operation at {drill.op_at():g}s")
    try:
        drill.prepare(ctx)
        load.start()
        ctx.started_at = load.started_at
        sampler.start()
        _follow(drill, ctx, load, sampler, operation)
        operation.join(timeout=120)
        sampler.stop()
        accepted = accepted_times(load.orders_path)
        ids = list(accepted)
        say(f"  load over: {len(ids)} orders accepted; checking every one reached a final state")
        audit = audit_orders(ctx.gateway, ids, drill.audit_deadline(ctx), say)
        audit.accepted_at = accepted
    finally:
        ctx.stop.set()
        load.stop()
        sampler.stop()
        try:
            drill.restore(ctx)
        except Exception as exc:  # restoring must not hide the drill's own result
            say(f"  restore failed: {exc}")
    rows = build_rows(load.samples(), sampler.samples, ctx.started_at)
    slos = []
    if operation.error is not None:
        slos.append(SLO("operation completed", "no error", operation.error, False))
    if not rows or sum(r["requests"] for r in rows) == 0:
        slos.append(SLO("load ran", "> 0 requests", "0", False, load.log_tail()))
    else:
        slos += drill.judge(ctx, rows, audit)
    report = _report(drill, ctx, rows, slos, audit, plan, wall_started, sampler)
    from loadtests.drills.report import write_report  # matplotlib: only when reporting

    files = write_report(report, folder)
    attach_console(folder, say)
    _print_summary(report, files.html, say)
    return DrillResult(report, folder, report["passed"])


def attach_console(folder: Path, say: Say) -> None:
    """When the console runs, keep its recorded window beside the report (console.html): the
    live picture of the drill, frozen, that opens offline."""
    from infra.console.files import console_url
    from infra.embedded import mesh_home

    url = console_url(mesh_home())
    if url is None:
        return
    try:
        with urllib.request.urlopen(f"{url}/api/export", timeout=20) as answer:
            (folder / "console.html").write_bytes(answer.read())
    except OSError as exc:  # the report stands without it
        say(f"  console export not attached: {exc}")
        return
    say(f"  console window attached: {folder / 'console.html'}")


class _Operation:
    """The drill's operation in a thread, with its start and end marked on the timeline."""

    def __init__(self, drill: Drill, ctx: DrillContext) -> None:
        self.drill, self.ctx = drill, ctx
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="drill-operation", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ctx = self.ctx
        ctx.op_start = ctx.now()
        try:
            self.drill.operate(ctx)
        except Exception as exc:
            self.error = str(exc) or type(exc).__name__
            ctx.event(f"operation failed: {self.error}")
            if not isinstance(exc, RuntimeFailure):
                traceback.print_exc()
        finally:
            ctx.op_end = ctx.now()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.error = self.error or f"still running {timeout:.0f}s after the load ended"

    @property
    def started(self) -> bool:
        return self.thread is not None


def _follow(
    drill: Drill, ctx: DrillContext, load: LocustRun, sampler: PlatformSampler, op: _Operation
) -> None:
    """Until the load ends: start the operation on time, print one line a second."""
    hard_stop = time.monotonic() + drill.duration + 30
    shown = 0
    while load.running() and time.monotonic() < hard_stop:
        if not op.started and ctx.now() >= drill.op_at():
            op.start()
        samples = load.samples()
        if len(samples) > shown:
            shown = len(samples)
            ctx.say(_line(ctx, samples[-1], sampler, op))
        time.sleep(0.25)
    if not op.started:
        ctx.event("the load ended before the operation started")
    if load.running():
        load.stop()


def _line(
    ctx: DrillContext, sample: dict[str, Any], sampler: PlatformSampler, op: _Operation
) -> str:
    t = ctx.rel(sample["t"])
    phase = "op" if op.started and ctx.op_end is None else "  "
    p50, p99 = sample.get("p50_ms"), sample.get("p99_ms")
    latency = (
        f"p50 {p50:5.0f}ms p99 {p99:5.0f}ms"
        if p50 is not None and p99 is not None
        else "no answers"
    )
    requests, failures = sample.get("requests", 0), sample.get("failures", 0)
    line = f"  {t:6.1f}s {phase} {requests:4d} req/s {latency} fail {failures:3d}"
    platform = sampler.latest()
    if platform is not None:
        service = ctx.options.service
        versions = platform.replicas.get(service, {})
        line += f" | {service} " + " ".join(f"{v}:{n}" for v, n in sorted(versions.items()))
        weights = platform.weights.get(service)
        if weights:
            line += " w " + "/".join(f"{v}={w}" for v, w in sorted(weights.items()))
        lags = [v for v in platform.lag.values() if v is not None]
        if lags:
            line += f" | lag {max(lags):.0f}"
    return line


def _report(
    drill: Drill,
    ctx: DrillContext,
    rows: list[dict[str, Any]],
    slos: list[SLO],
    audit: OrderAudit,
    plan: LoadPlan,
    wall_started: float,
    sampler: PlatformSampler,
) -> dict[str, Any]:
    total = window(rows, 0.0, float("inf"))
    summary: dict[str, Any] = {
        "requests": total.requests,
        "failures": total.failures,
        "error_rate": round(total.error_rate, 5),
        "p50_ms": total.p50_ms,
        "p99_ms": total.p99_ms,
        "orders_accepted": audit.accepted,
        "orders_terminal": len(audit.terminal),
        "orders_lost": len(audit.lost),
        **{f"orders_{k.lower()}": v for k, v in sorted(audit.counts().items())},
        "cancelled_by_reason": audit.cancelled_by_reason(),
        "platform_samples": len(sampler.samples),
        **{k: v for k, v in ctx.facts.items() if isinstance(v, (int, float, str))},
    }
    raw = ("rt_ms", "rt_by_name", "completion_ms", "errors")
    timeline = [{k: v for k, v in row.items() if k not in raw} for row in rows]
    finished = time.time()
    return {
        "drill": drill.name,
        "runtime": ctx.runtime.name,
        "title": drill.title_for(ctx),
        "description": drill.description,
        "started_at": ctx.started_at or wall_started,
        "finished_at": finished,
        "duration_s": round(finished - wall_started, 1),
        "params": drill.params(),
        "operation": {
            "name": ctx.facts.get("operation", drill.name),
            "start": ctx.op_start,
            "end": ctx.op_end,
            "events": ctx.events,
        },
        "phases": [{"name": "baseline", "start": WARMUP, "end": ctx.op_start or WARMUP}],
        "timeline": timeline,
        "series": ctx.series,
        "summary": summary,
        "slos": [asdict(s) for s in slos],
        "lost_orders": audit.lost[:50],
        # Each lost order: its id, when it was accepted and why it counts as lost (a drill
        # may say more: ctx.facts["lost_detail"]).
        "lost": ctx.facts.get("lost_detail") or lost_detail(audit, ctx)[:MAX_LOST_LISTED],
        "sampler_errors": sampler.errors[:20],
        "passed": bool(slos) and all(s.passed for s in slos),
    }


MAX_LOST_LISTED = 200


def lost_detail(audit: OrderAudit, ctx: DrillContext) -> list[dict[str, Any]]:
    """The lost orders as the report lists them: id, accepted at (drill seconds), why."""
    return [
        {
            "order": order_id,
            "accepted_s": ctx.rel(audit.accepted_at[order_id])
            if order_id in audit.accepted_at
            else None,
            "why": audit.why_lost(order_id),
        }
        for order_id in audit.lost
    ]


def _cancellations(summary: dict[str, Any]) -> str:
    """ ", cancelled 14 (payment_failed 12, out_of_stock 2)"; nothing when none was."""
    reasons = summary.get("cancelled_by_reason") or {}
    if not reasons:
        return ""
    listed = ", ".join(f"{reason} {count}" for reason, count in reasons.items())
    return f", cancelled {sum(reasons.values())} ({listed})"


def _print_summary(report: dict[str, Any], html: Path, say: Say) -> None:
    summary = report["summary"]
    say(
        f"  {summary['requests']} requests, {summary['failures']} failed, "
        f"p99 {summary['p99_ms']}ms; orders accepted {summary['orders_accepted']}, "
        f"lost {summary['orders_lost']}{_cancellations(summary)}"
    )
    for slo in report["slos"]:
        mark = "PASS" if slo["passed"] else "FAIL"
        say(f"  [{mark}] {slo['name']}: {slo['measured']} (threshold {slo['threshold']})")
    verdict = "PASSED" if report["passed"] else "FAILED"
    say(f"drill {report['drill']} {verdict}; report: {html}")
