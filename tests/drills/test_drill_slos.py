"""The drills' judgement on synthetic timelines: each SLO passes on a good run and FAILS on a
bad one (the real drills, which pass, are in test_drills.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from infra.runtime.models import GatewayInfo
from loadtests.drills.audit import OrderAudit
from loadtests.drills.catalog import (
    Autoscale,
    BrokerRestart,
    Canary,
    CanaryBad,
    KillReplica,
    Rolling,
)
from loadtests.drills.engine import DrillContext, DrillOptions
from loadtests.drills.timeline import percentile, window


def rows(
    seconds: int, *, rps: int = 20, latency: float = 10.0, bad: dict[int, Any] | None = None
) -> list[dict[str, Any]]:
    """One row a second; ``bad`` maps a second to (failures, latency) for that second."""
    out = []
    for t in range(1, seconds + 1):
        failures, lat = (bad or {}).get(t, (0, latency))
        out.append(
            {
                "t": float(t),
                "requests": rps,
                "failures": failures,
                "rt_ms": [lat] * rps,
                "by_name": {
                    "POST /api/orders": {"requests": rps // 2, "failures": failures},
                    "GET /api/stock": {"requests": rps - rps // 2, "failures": 0},
                },
                "errors": {"POST /api/orders: HTTP 500": failures} if failures else {},
            }
        )
    return out


def context(runtime: str = "local", **facts: Any) -> DrillContext:
    ctx = DrillContext(
        # Judging reads only the runtime's name (its latency allowance).
        runtime=SimpleNamespace(name=runtime),  # type: ignore[arg-type]
        gateway=GatewayInfo(url="http://127.0.0.1:1", api_key="k"),
        options=DrillOptions(duration=40),
        say=lambda _m: None,
        stop=threading.Event(),
    )
    ctx.started_at = 1000.0
    ctx.facts.update(facts)
    return ctx


def fine() -> OrderAudit:
    """One accepted order, terminal: what a healthy run's audit says."""
    return OrderAudit(accepted=1, terminal={"a": "CONFIRMED"})


def verdicts(slos: list[Any]) -> dict[str, bool]:
    return {s.name: s.passed for s in slos}


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.99) is None
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([float(v) for v in range(1, 101)], 0.99) == 99.0


def test_window_keeps_exact_latencies_and_route_counts() -> None:
    data = rows(10, bad={5: (2, 400.0)})
    w = window(data, 4, 6)
    assert (w.requests, w.failures, w.p99_ms) == (40, 2, 400.0)
    assert w.service_counts("/api/orders") == (20, 2)


def test_rolling_passes_and_fails() -> None:
    drill = Rolling(DrillOptions(duration=40))
    ctx = context(rollout_phase="completed")
    ctx.op_start, ctx.op_end = 12.0, 20.0
    good = verdicts(drill.judge(ctx, rows(40, bad={15: (0, 15.0)}), fine()))
    assert all(good.values()), good
    bad = verdicts(drill.judge(ctx, rows(40, bad={15: (1, 100.0)}), fine()))
    assert not bad["no failed requests"]
    assert not bad["p99 during the rollout at most 2x the baseline"]
    ctx.facts["rollout_phase"] = "aborted"
    assert not verdicts(drill.judge(ctx, rows(40), fine()))["rollout completed"]


@pytest.mark.parametrize(
    ("runtime", "spike_ms", "kept"),
    [
        ("local", 50.0, True),
        ("local", 210.0, False),
        ("compose", 380.0, True),
        ("compose", 450.0, False),
    ],
)
def test_the_latency_allowance_follows_the_runtime(
    runtime: str, spike_ms: float, kept: bool
) -> None:
    """A container start costs more than a process: compose allows baseline + 400 ms of p99
    during a rollout, local baseline + 50 ms (the baseline here is 10 ms, so 2x is 20 ms)."""
    drill = Rolling(DrillOptions(duration=40))
    ctx = context(runtime, rollout_phase="completed")
    ctx.op_start, ctx.op_end = 12.0, 20.0
    judged = verdicts(drill.judge(ctx, rows(40, bad={15: (0, spike_ms)}), fine()))
    assert judged["p99 during the rollout at most 2x the baseline"] is kept


def canary_state(rollback_after: float, weight: int) -> dict[str, Any]:
    return {
        "events": [
            {"at": 1012.0, "message": f"step 1/3: {weight}% to v3 (1 replicas)"},
            {"at": 1012.0 + rollback_after, "message": "all traffic back on v1"},
        ],
        "analyses": [{"verdict": "fail", "weight": weight, "reason": "error rate 30% > 5%"}],
    }


def test_canary_bad_rollback_time_and_error_bound() -> None:
    drill = CanaryBad(DrillOptions(duration=40))
    ctx = context(rollout_phase="aborted", rollout=canary_state(5.5, 20))
    errors = {t: (1, 10.0) for t in range(13, 18)}  # 1 of 10 orders requests: 10% < 20%
    good = verdicts(drill.judge(ctx, rows(40, bad=errors), fine()))
    assert all(good.values()), good

    slow = context(rollout_phase="aborted", rollout=canary_state(11.0, 20))
    assert not verdicts(drill.judge(slow, rows(40, bad=errors), fine()))[
        "rollback within two analysis intervals"
    ]
    flood = {t: (4, 10.0) for t in range(13, 18)}  # 40% of orders requests failed
    assert not verdicts(drill.judge(ctx, rows(40, bad=flood), fine()))[
        "errors seen by users bounded by the canary weight"
    ]
    manual = context(rollout_phase="completed", rollout=canary_state(5.0, 20))
    assert not verdicts(drill.judge(manual, rows(40), fine()))["rolled back automatically"]


def test_autoscale_needs_a_timely_scale_out_and_a_recovered_p99() -> None:
    drill = Autoscale(DrillOptions(duration=45))
    ctx = context(scaled_out_at=25.0, serving_at=27.0)
    ctx.op_start = 10.0
    assert all(verdicts(drill.judge(ctx, rows(45), fine())).values())
    late = context(scaled_out_at=41.0, serving_at=43.0)
    late.op_start = 10.0
    assert not verdicts(drill.judge(late, rows(45), fine()))["scaled out within 30 s of the spike"]
    slow = verdicts(drill.judge(ctx, rows(45, latency=2000.0), fine()))
    assert not slow["p99 back under its threshold after the scale-out"]


def test_kill_replica_counts_lost_orders_and_failover_errors() -> None:
    drill = KillReplica(DrillOptions(duration=30))
    ctx = context()
    ctx.op_start, ctx.op_end = 10.0, 14.0
    fine = OrderAudit(accepted=10, terminal={str(i): "CONFIRMED" for i in range(10)})
    assert all(verdicts(drill.judge(ctx, rows(30), fine)).values())
    lost = OrderAudit(accepted=10, terminal={str(i): "CONFIRMED" for i in range(9)}, pending=["9"])
    assert not verdicts(drill.judge(ctx, rows(30), lost))["no lost orders"]
    failing = verdicts(drill.judge(ctx, rows(30, bad={11: (2, 10.0)}), fine))
    assert not failing["error rate during the failover under 0.5%"]


@pytest.mark.parametrize(("finished_after", "passed"), [(20.0, True), (75.0, False)])
def test_broker_restart_orders_terminal_within_a_minute(
    finished_after: float, passed: bool
) -> None:
    drill = BrokerRestart(DrillOptions(duration=35))
    ctx = context(broker_back_at=1020.0)
    audit = OrderAudit(accepted=2, terminal={"a": "CONFIRMED", "b": "CANCELLED"})
    audit.finished_at = {"a": 1005.0, "b": 1020.0 + finished_after}
    result = verdicts(drill.judge(ctx, rows(35), audit))
    assert result["accepted orders terminal within 60 s after the broker is back"] is passed


def test_autoscale_spike_is_sized_to_the_runtime() -> None:
    """Compose's containers get half a core each: its spike is the one its box carries."""
    local = Autoscale(DrillOptions(duration=40)).plan()
    compose = Autoscale(DrillOptions(duration=40, runtime="compose")).plan()
    assert (local.rate, local.spike_rate) == (10, 60)
    assert (compose.rate, compose.spike_rate) == (10, 25)
    assert "25" in compose.describe() and "60" in local.describe()


@pytest.mark.parametrize(
    ("verdicts_by_step", "kept"),
    [
        ([(25, "pass"), (50, "pass"), (100, "pass")], True),
        # CI saw this: too little canary traffic at 25%, measured again, then a pass.
        ([(25, "inconclusive"), (25, "pass"), (50, "pass"), (100, "pass")], True),
        ([(25, "fail"), (25, "pass"), (50, "pass"), (100, "pass")], False),
        ([(25, "pass"), (50, "inconclusive"), (100, "pass")], False),
        ([(25, "pass"), (50, "pass")], False),
        ([], False),
    ],
)
def test_canary_judges_each_step_and_never_a_failed_analysis(
    verdicts_by_step: list[tuple[int, str]], kept: bool
) -> None:
    analyses = [{"weight": w, "verdict": v} for w, v in verdicts_by_step]
    ctx = context(rollout_phase="completed", rollout={"analyses": analyses})
    judged = verdicts(Canary(DrillOptions(duration=40)).judge(ctx, rows(40), fine()))
    assert judged["every step's analysis passed, none failed"] is kept
