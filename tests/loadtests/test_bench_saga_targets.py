"""bench_saga's verdicts on issue 19's saga targets: each can be met and missed."""

from __future__ import annotations

from loadtests.bench_saga import targets


def figures(**changes: float | int | None) -> dict[str, float | int | None]:
    base: dict[str, float | int | None] = {
        "accepted": 6000,
        "terminal": 6000,
        "steady_rps": 612.0,
        "p99_ms": 430.0,
        "cpu_per_order_ms": 2.1,
    }
    return base | changes


def test_a_run_that_meets_every_target() -> None:
    judged = targets(figures())
    assert all(t["met"] for t in judged.values()), judged
    assert judged[">= 600 orders/s steady"]["value"] == 612.0


def test_each_target_is_missed_on_its_own() -> None:
    misses = {
        ">= 600 orders/s steady": figures(steady_rps=599.9),
        "p99 POST->terminal < 500 ms": figures(p99_ms=500.0),
        "every order terminal": figures(terminal=5999),
        "CPU per order <= 2.2 ms": figures(cpu_per_order_ms=2.21),
    }
    for name, run in misses.items():
        judged = targets(run)
        assert [n for n, t in judged.items() if not t["met"]] == [name]


def test_a_run_too_short_to_measure_is_a_miss_not_a_pass() -> None:
    judged = targets(figures(steady_rps=None, p99_ms=None, cpu_per_order_ms=None))
    assert not judged[">= 600 orders/s steady"]["met"]
    assert not judged["p99 POST->terminal < 500 ms"]["met"]
    assert not judged["CPU per order <= 2.2 ms"]["met"]
    assert not targets(figures(accepted=0, terminal=0))["every order terminal"]["met"]
