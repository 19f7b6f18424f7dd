"""bench-curves' figures from a run: the rate orders came out at, the knee, the replica rows."""

from __future__ import annotations

import pytest

from loadtests import bench_saga
from loadtests.bench_curves import figures_of, knee_of, replica_rows


def run_of(rate: float, latency: float, orders: int = 100) -> bench_saga.Run:
    """Orders due every 1/rate s from t=10, each ending ``latency`` s after its slot."""
    run = bench_saga.Run()
    run.started = 10.0
    for n in range(orders):
        due = 10.0 + n / rate
        run.sent_at[f"o{n}"] = due
        run.terminal_at[f"o{n}"] = due + latency
    run.sending_done = 10.0 + orders / rate
    return run


def test_a_steps_rate_is_the_rate_orders_come_out_at_whatever_their_latency() -> None:
    # A steady 2 s of latency does not make a step look short of its rate.
    f = figures_of(run_of(50, 2.0))
    assert f["achieved"] == pytest.approx(50)
    assert f["p50_ms"] == pytest.approx(2000) and f["terminal"] == 100


def test_the_saga_knee_is_the_last_step_that_keeps_up_with_a_low_p99() -> None:
    def step(offered: float, achieved: float, p99: float) -> dict[str, float]:
        return {"offered": offered, "achieved": achieved, "p99_ms": p99}

    assert knee_of([step(10, 10, 300), step(20, 20, 350)]) is None
    assert knee_of([step(10, 10, 300), step(20, 20, 350), step(30, 25, 900)]) == 20
    assert knee_of([step(10, 10, 300), step(20, 20, 1600), step(30, 30, 1700)]) == 10


def test_each_replica_count_is_the_median_of_its_rounds() -> None:
    def one(achieved: float, cpu: float) -> dict[str, float]:
        return {
            "achieved": achieved,
            "cpu_per_order_ms": cpu,
            "p99_ms": 1,
            "terminal": 9,
            "errors": 0,
        }

    rows = replica_rows(
        {2: [one(160, 9), one(150, 10), one(140, 11)], 1: [one(90, 10), one(110, 12)]}
    )
    assert [r["replicas"] for r in rows] == [1, 2]
    assert (rows[0]["steady_rps"], rows[0]["cpu_per_order_ms"]) == (100, 11)
    assert (rows[1]["steady_rps"], rows[1]["cpu_per_order_ms"]) == (150, 10)
    assert len(rows[1]["rounds"]) == 3
