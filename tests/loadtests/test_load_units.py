"""The load's parts on their own: seeded data, settings, shapes on a fake clock, the sample
writer on a fake clock, and which classes the locustfile shows Locust."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from loadtests import data
from loadtests.samples import SampleWriter, percentile, read_samples

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"

# Importing locust patches the standard library with gevent, which the asyncio tests of this
# session must not get: import it unpatched (the Locust runs of test_locust_runs.py are
# processes of their own, patched as usual).
_before = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    from locust.util.load_locustfile import load_locustfile

    from loadtests import shapes
finally:
    if _before is None:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
    else:
        os.environ["LOCUST_SKIP_MONKEY_PATCH"] = _before


def test_the_launch_recipe_knows_every_shape() -> None:
    """``loadtests.launch`` (imported by meshctl and the console, where Locust never is) keeps
    its own list of the shape names: it must be this module's."""
    from loadtests.launch import SHAPES

    assert tuple(shapes.SHAPES) == SHAPES


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- data --------------------------------------------------------------------------------------


def test_the_skus_are_the_inventory_seed_catalogue() -> None:
    catalogue = json.loads((ROOT / "services" / "inventory" / "catalog.json").read_text())
    assert list(data.SKUS) == [item["sku"] for item in catalogue]


def test_shop_data_is_deterministic_per_seed_and_stream() -> None:
    def orders(seed: int, stream: int) -> list[dict[str, Any]]:
        shop = data.ShopData(seed, stream)
        return [shop.order() for _ in range(50)]

    assert orders(7, 0) == orders(7, 0)
    assert orders(7, 0) != orders(8, 0)
    assert orders(7, 0) != orders(7, 1)


def test_orders_are_what_the_orders_service_accepts() -> None:
    shop = data.ShopData(3, 0)
    for _ in range(300):
        order = shop.order()
        assert re.fullmatch(r"load-c-\d{4}", order["customer_id"])
        skus = [line["sku"] for line in order["items"]]
        assert 1 <= len(skus) <= 3 and len(set(skus)) == len(skus)  # a SKU on one line only
        assert set(skus) <= set(data.SKUS)
        assert all(line["quantity"] in (1, 2, 3) for line in order["items"])


def test_a_decline_share_makes_customers_payments_declines() -> None:
    shop = data.ShopData(1, 0, decline_share=0.5)
    customers = [shop.customer() for _ in range(400)]
    declined = sum(c.startswith(data.DECLINED_PREFIX) for c in customers)
    assert 120 < declined < 280


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("2.5", 2.5), ("30s", 30), ("2m", 120), ("1h30m", 5400), ("1m30s", 90)],
)
def test_durations(text: str, seconds: float) -> None:
    assert data.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m", "1s2m"])
def test_what_is_not_a_duration(text: str) -> None:
    assert data.parse_duration(text) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOAD_USERS": "many"}, "LOAD_USERS must be an integer >= 1, got 'many'"),
        ({"LOAD_USERS": "0"}, "LOAD_USERS must be an integer >= 1, got '0'"),
        ({"LOAD_SPAWN_RATE": "0"}, "LOAD_SPAWN_RATE must be a number > 0, got '0'"),
        ({"LOAD_DURATION": "later"}, "LOAD_DURATION must be a duration > 0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        shapes.SteadyShape(env)
    assert message in str(stopped.value)
    assert "\n" not in str(stopped.value)


# -- shapes ------------------------------------------------------------------------------------


def ticks(shape: shapes.EnvShape, clock: FakeClock, times: list[float]) -> list[Any]:
    shape.reset_time()
    start = clock.now
    out = []
    for t in times:
        clock.now = start + t
        out.append(shape.tick())
    return out


def test_steady_holds_its_users_and_ends_at_the_duration() -> None:
    clock = FakeClock(1000.0)
    env = {"LOAD_USERS": "4", "LOAD_SPAWN_RATE": "2", "LOAD_DURATION": "1m"}
    shape = shapes.SteadyShape(env, clock=clock)
    assert ticks(shape, clock, [0, 30, 59.9, 60, 61]) == [(4, 2), (4, 2), (4, 2), None, None]


def test_step_adds_users_every_step_up_to_the_maximum() -> None:
    clock = FakeClock()
    env = {
        "LOAD_USERS": "5",
        "LOAD_STEP_USERS": "2",
        "LOAD_STEP_EVERY": "10s",
        "LOAD_DURATION": "60",
    }
    shape = shapes.StepShape(env, clock=clock)
    users = [tick[0] for tick in ticks(shape, clock, [0, 9.9, 10, 20, 30, 59])]
    assert users == [2, 2, 4, 5, 5, 5]
    assert ticks(shape, clock, [60]) == [None]


def test_spike_jumps_at_once_and_comes_back() -> None:
    clock = FakeClock()
    env = {
        "LOAD_USERS": "2",
        "LOAD_SPIKE_USERS": "12",
        "LOAD_SPIKE_AT": "20",
        "LOAD_SPIKE_DURATION": "10",
        "LOAD_SPAWN_RATE": "1",
        "LOAD_DURATION": "40",
    }
    shape = shapes.SpikeShape(env, clock=clock)
    result = ticks(shape, clock, [0, 19.9, 20, 29.9, 30, 39.9, 40])
    assert [r[0] if r else None for r in result] == [2, 2, 12, 12, 2, 2, None]
    # Sudden: the 10 extra users within a second although LOAD_SPAWN_RATE is 1.
    assert result[2][1] >= 10


def test_soak_ramps_over_its_ramp_and_lasts_an_hour_by_default() -> None:
    clock = FakeClock()
    shape = shapes.SoakShape({"LOAD_USERS": "30", "LOAD_RAMP": "2m"}, clock=clock)
    assert ticks(shape, clock, [0, 3599, 3600]) == [(30, 0.25), (30, 0.25), None]


def test_the_shape_is_chosen_by_name() -> None:
    assert shapes.chosen({}) is None
    assert shapes.chosen({"LOAD_SHAPE": "Spike"}) is shapes.SpikeShape
    with pytest.raises(SystemExit, match="LOAD_SHAPE must be one of steady, step, spike, soak"):
        shapes.chosen({"LOAD_SHAPE": "wave"})


@pytest.mark.parametrize(
    ("env", "users", "shape"),
    [
        ({}, ["ShopUser"], []),
        ({"LOAD_MODE": "open"}, ["ArrivalUser"], []),
        ({"LOAD_SHAPE": "step"}, ["ShopUser"], ["StepShape"]),
        ({"LOAD_MODE": "open", "LOAD_SHAPE": "spike"}, ["ArrivalUser"], ["SpikeShape"]),
    ],
)
def test_locust_sees_only_the_chosen_user_class_and_shape(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], users: list[str], shape: list[str]
) -> None:
    for name in ("LOAD_MODE", "LOAD_SHAPE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    user_classes, shape_instances = load_locustfile(str(LOCUSTFILE))
    assert sorted(user_classes) == users
    assert [type(s).__name__ for s in shape_instances] == shape


# -- samples -----------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 95) == 7
    assert percentile([], 50) is None


def test_one_line_a_second_with_empty_seconds_and_completions_apart(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    clock = FakeClock(100.2)
    writer = SampleWriter(path, users=lambda: 3, clock=clock)
    writer.start()
    for at, kind, name, ms, error in [
        (100.3, "GET", "GET /api/stock", 10.0, None),
        (100.4, "GET", "GET /api/stock", 30.0, None),
        (100.5, "POST", "POST /api/orders", 20.0, RuntimeError("HTTP 503 unavailable\nmore")),
        (100.6, "ORDER", "order completion", 400.0, None),
        (100.7, "ORDER", "order completion", 60000.0, RuntimeError("not terminal after 60s")),
        (102.1, "GET", "GET /api/stock/{sku}", 5.0, None),
    ]:
        clock.now = at
        writer.record(kind, name, ms, error)
    clock.now = 102.5
    writer.flush(int(clock.now))  # what the ticker does just after each second
    assert [line["t"] for line in read_samples(path)] == [101.0, 102.0]
    clock.now = 102.8
    writer.stop()  # the second in progress too
    first, empty, last = read_samples(path)

    assert first == {
        "t": 101.0,
        "users": 3,
        "requests": 3,
        "failures": 1,
        "p50_ms": 20.0,
        "p95_ms": 30.0,
        "p99_ms": 30.0,
        "max_ms": 30.0,
        "by_name": {
            "GET /api/stock": {"requests": 2, "failures": 0},
            "POST /api/orders": {"requests": 1, "failures": 1},
        },
        "errors": {"POST /api/orders: HTTP 503 unavailable": 1},
        "completions": 2,
        "completion_failures": 1,
        "completion_p50_ms": 400.0,
        "completion_p99_ms": 60000.0,
        "rt_ms": [10.0, 20.0, 30.0],
        # Raw times by route and of completions, for windows over one route (the lessons).
        "rt_by_name": {"GET /api/stock": [10.0, 30.0], "POST /api/orders": [20.0]},
        "completion_ms": [400.0, 60000.0],
    }
    assert empty["t"] == 102.0 and empty["requests"] == 0 and empty["completions"] == 0
    assert empty["rt_ms"] == []
    assert empty["p50_ms"] is None and empty["completion_p99_ms"] is None
    assert empty["by_name"] == {} and empty["errors"] == {}
    assert last["t"] == 103.0 and last["by_name"] == {
        "GET /api/stock/{sku}": {"requests": 1, "failures": 0}
    }
    writer.close()


def test_a_new_run_starts_its_own_timeline(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    clock = FakeClock(10.5)
    writer = SampleWriter(path, users=lambda: 1, clock=clock)
    writer.start()
    clock.now = 11.2
    writer.stop()
    clock.now = 500.0
    writer.record("GET", "GET /api/stock", 1.0)  # between two runs (web UI): not counted
    clock.now = 3600.5
    writer.start()
    writer.record("GET", "GET /api/stock", 1.0)
    clock.now = 3601.1
    writer.close()
    lines = read_samples(path)
    assert [(line["t"], line["requests"]) for line in lines] == [
        (11.0, 0),
        (12.0, 0),
        (3601.0, 1),
        (3602.0, 0),
    ]


def test_read_samples_leaves_out_a_half_written_last_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"t": 1.0, "requests": 2}\n{"t": 2.0, "requests": 3}\n{"t": 3.0, "req')
    assert read_samples(path) == [{"t": 1.0, "requests": 2}, {"t": 2.0, "requests": 3}]
    path.write_text('{"t": 1.0}\n{"t": 2.\n{"t": 3.0}\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        read_samples(path)
