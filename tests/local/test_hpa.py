"""The HPA arithmetic with a fake clock: formula, tolerance, policies, stabilization, bounds."""

from __future__ import annotations

import pytest

from infra.local.catalog import AutoscaleSpec, MetricSpec, PolicySpec, RulesSpec
from infra.local.hpa import Hpa, metric_desired
from infra.runtime.models import MetricReading


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(**overrides: object) -> AutoscaleSpec:
    base: dict[str, object] = {
        "min": 1,
        "max": 10,
        "metrics": [MetricSpec(type="in_flight", target=10)],
        "scale_up": RulesSpec(stabilization=0, policies=[]),
        "scale_down": RulesSpec(stabilization=0, policies=[]),
    }
    return AutoscaleSpec.model_validate({**base, **overrides})


def reading(value: float | None, target: float = 10, name: str = "in_flight") -> MetricReading:
    return MetricReading(name=name, value=value, target=target)


def test_the_formula_and_its_tolerance() -> None:
    assert metric_desired(2, 30, 10, 0.1) == 6  # ceil(2 * 3)
    assert metric_desired(3, 11, 10, 0.1) == 3  # ratio 1.1: within tolerance
    assert metric_desired(3, 9, 10, 0.1) == 3
    assert metric_desired(3, 11.5, 10, 0.1) == 4  # ceil(3 * 1.15) = 4
    assert metric_desired(4, 5, 10, 0.1) == 2
    assert metric_desired(4, 0, 10, 0.1) == 0


def test_the_highest_metric_wins_and_bounds_apply() -> None:
    clock = Clock()
    hpa = Hpa(spec(max=5), clock)
    decision = hpa.decide("s", 2, [reading(12), reading(90, 20, "cpu")])
    assert [m.desired for m in decision.metrics] == [3, 9]
    assert decision.raw_desired == 9 and decision.desired == 5
    assert "limited to 5" in decision.reason
    down = Hpa(spec(min=2), clock).decide("s", 4, [reading(0)])
    assert down.desired == 2


def test_no_metric_keeps_the_replicas() -> None:
    decision = Hpa(spec(), Clock()).decide("s", 3, [reading(None)])
    assert decision.desired == 3 and decision.reason.startswith("no metrics")


def test_scale_up_policies_pods_or_percent_whichever_allows_more() -> None:
    clock = Clock()
    rules = RulesSpec(
        policies=[
            PolicySpec(type="pods", value=4, period=15),
            PolicySpec(type="percent", value=100, period=15),
        ]
    )
    hpa = Hpa(spec(max=100, scale_up=rules), clock)
    # From 2: +4 pods (6) beats +100% (4).
    assert hpa.decide("s", 2, [reading(1000)]).desired == 6
    # Within the same 15 s the period started at 2 replicas: still capped at 6.
    clock.now += 5
    assert hpa.decide("s", 6, [reading(1000)]).desired == 6
    # A new period starts at 6: +100% (12) beats +4 (10).
    clock.now += 15
    assert hpa.decide("s", 6, [reading(1000)]).desired == 12


def test_select_min_takes_the_smaller_change() -> None:
    rules = RulesSpec(
        select="min",
        policies=[
            PolicySpec(type="pods", value=4, period=15),
            PolicySpec(type="percent", value=100, period=15),
        ],
    )
    decision = Hpa(spec(max=100, scale_up=rules), Clock()).decide("s", 2, [reading(1000)])
    assert decision.desired == 4 and decision.up_limit == 4


def test_disabled_direction_never_moves() -> None:
    rules = RulesSpec(select="disabled", policies=[PolicySpec(type="pods", value=1, period=1)])
    decision = Hpa(spec(scale_down=rules), Clock()).decide("s", 5, [reading(0)])
    assert decision.desired == 5


def test_scale_down_policy_removes_one_pod_per_period() -> None:
    clock = Clock()
    rules = RulesSpec(policies=[PolicySpec(type="pods", value=1, period=60)])
    hpa = Hpa(spec(scale_down=rules), clock)
    assert hpa.decide("s", 5, [reading(0)]).desired == 4
    clock.now += 30
    assert hpa.decide("s", 4, [reading(0)]).desired == 4  # the period began at 5
    clock.now += 31
    assert hpa.decide("s", 4, [reading(0)]).desired == 3


def test_percent_scale_down_rounds_toward_keeping_pods() -> None:
    rules = RulesSpec(policies=[PolicySpec(type="percent", value=50, period=60)])
    decision = Hpa(spec(scale_down=rules), Clock()).decide("s", 5, [reading(0)])
    assert decision.down_limit == 2 and decision.desired == 2  # floor(5 * 0.5)


def test_scale_down_waits_for_the_stabilization_window() -> None:
    clock = Clock()
    hpa = Hpa(spec(scale_down=RulesSpec(stabilization=300, policies=[])), clock)
    assert hpa.decide("s", 2, [reading(40)]).desired == 8
    for _ in range(10):  # load gone, but within 300 s of the recommendation of 8
        clock.now += 29
        held = hpa.decide("s", 8, [reading(0)])
        assert held.desired == 8 and held.stabilized == 8
        assert "stabilization window" in held.reason
    clock.now += 15  # 305 s after the last 8
    assert hpa.decide("s", 8, [reading(0)]).desired == 1


def test_scale_down_uses_the_highest_recommendation_of_the_window() -> None:
    clock = Clock()
    hpa = Hpa(spec(scale_down=RulesSpec(stabilization=10, policies=[])), clock)
    hpa.decide("s", 6, [reading(10)])  # recommends 6
    clock.now += 4
    hpa.decide("s", 6, [reading(5)])  # recommends 3
    clock.now += 4
    assert hpa.decide("s", 6, [reading(0)]).desired == 6  # the 6 is still in the window
    clock.now += 3  # 11 s: the 6 has left, the 3 (7 s ago) has not
    assert hpa.decide("s", 6, [reading(0)]).desired == 3


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    clock = Clock()
    hpa = Hpa(spec(scale_up=RulesSpec(stabilization=10, policies=[])), clock)
    assert hpa.decide("s", 2, [reading(10)]).desired == 2  # recommends 2
    clock.now += 2
    spike = hpa.decide("s", 2, [reading(50)])  # recommends 10, the window says 2
    assert spike.raw_desired == 10 and spike.desired == 2
    clock.now += 9
    assert hpa.decide("s", 2, [reading(50)]).desired == 10  # sustained for the window


@pytest.mark.parametrize(("current", "value", "expected"), [(1, 200, 10), (10, 0, 1)])
def test_bounds_hold_without_policies(current: int, value: float, expected: int) -> None:
    assert Hpa(spec(), Clock()).decide("s", current, [reading(value)]).desired == expected


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ValueError, match="min \\(5\\) is above max \\(2\\)"):
        spec(min=5, max=2)
