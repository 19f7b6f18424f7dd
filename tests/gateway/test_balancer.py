"""Unit tests of the gateway's pure parts: route table, balancing, ejection, retry budget."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gateway.balancer import OutlierPolicy, Pool
from gateway.budget import RetryBudget
from gateway.routes import RouteError, RouteTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool_of(*versions: str, clock: Clock | None = None, **kw: object) -> Pool:
    pool = Pool("orders", clock=clock or Clock(), **kw)  # type: ignore[arg-type]
    pool.replace((f"i{n}", "127.0.0.1", 9000 + n, v) for n, v in enumerate(versions))
    return pool


def test_route_table_longest_prefix_and_rewrites() -> None:
    table = RouteTable.load()
    assert table.services == ["inventory", "notifications", "orders", "payments"]
    stream = table.match("/api/notifications/stream")
    assert stream is not None and stream.timeout is None and stream.retry == "never"
    orders = table.match("/api/orders/abc")
    assert orders is not None and orders.upstream_path("/api/orders/abc") == "/orders/abc"
    assert table.match("/api/ordersX") is None
    assert table.match("/admin") is None
    assert orders.may_retry("GET", False) and orders.may_retry("POST", True)
    assert not orders.may_retry("POST", False)


def test_route_table_errors_name_the_route(tmp_path: Path) -> None:
    bad = tmp_path / "routes.toml"
    bad.write_text(
        '[[route]]\nprefix = "/api/x"\nservice = "x"\nupstream = "/x"\ntimeout = "2 s"\n'
    )
    with pytest.raises(RouteError, match=r"route #1: timeout '2 s' is not a duration"):
        RouteTable.load(bad)
    bad.write_text('[[route]]\nprefix = "/api/x"\nupstream = "/x"\n')
    with pytest.raises(RouteError, match="route #1: missing field 'service'"):
        RouteTable.load(bad)


def test_weights_are_exact_with_smooth_round_robin() -> None:
    pool = pool_of("v1", "v1", "v2")
    picks = Counter(pool.choose({"v1": 90, "v2": 10}).version for _ in range(1000))  # type: ignore[union-attr]
    assert picks == {"v1": 900, "v2": 100}


def test_pin_and_missing_versions() -> None:
    pool = pool_of("v1", "v2")
    assert all(pool.choose({"v1": 100}, pinned="v2").version == "v2" for _ in range(10))  # type: ignore[union-attr]
    assert pool.choose(pinned="v3") is None
    # Weights that name only absent versions fall back to what exists.
    assert pool.choose({"v9": 100}) is not None


def test_least_outstanding_prefers_idle_instances() -> None:
    pool = pool_of("v1", "v1", "v1")
    busy = pool.choose()
    assert busy is not None
    pool.begin(busy)
    pool.begin(busy)
    seen = {pool.choose().id for _ in range(20)}  # type: ignore[union-attr]
    assert busy.id not in seen and len(seen) == 2


def test_round_robin_visits_everyone() -> None:
    pool = pool_of("v1", "v1", "v1", strategy="round_robin")
    picks = Counter(pool.choose().id for _ in range(30))  # type: ignore[union-attr]
    assert picks == {"i0": 10, "i1": 10, "i2": 10}


def test_ejection_backoff_grows_and_recovers() -> None:
    clock = Clock()
    policy = OutlierPolicy(consecutive_failures=3, base_ejection=1.0, max_ejection=4.0)
    pool = pool_of("v1", "v1", clock=clock, policy=policy)
    bad = pool.instances["i0"]

    def fail_until_ejected() -> None:
        results = []
        for _ in range(3):
            pool.begin(bad)
            results.append(pool.end(bad, ok=False))
        assert results == [False, False, True]

    fail_until_ejected()
    assert pool.ejected_ids() == ["i0"]
    assert {pool.choose().id for _ in range(5)} == {"i1"}  # type: ignore[union-attr]
    clock.now += 1.01
    assert pool.ejected_ids() == []
    fail_until_ejected()
    assert bad.ejected_until - clock.now == pytest.approx(2.0)  # doubled
    clock.now += 2.01
    fail_until_ejected()
    fail_until_ejected_at = bad.ejected_until - clock.now
    assert fail_until_ejected_at == pytest.approx(4.0)
    clock.now += 4.01
    for _ in range(3):
        pool.begin(bad)
        pool.end(bad, ok=True)
    assert bad.ejections == 0  # a healthy streak forgives


def test_never_ejects_the_whole_pool() -> None:
    policy = OutlierPolicy(consecutive_failures=1, max_ejected_percent=50)
    pool = pool_of("v1", "v1", policy=policy)
    assert pool.end(pool.instances["i0"], ok=False)
    assert not pool.end(pool.instances["i1"], ok=False)
    assert pool.choose() is pool.instances["i1"]


def test_a_pool_in_panic_routes_to_its_ejected_instances() -> None:
    """Envoy's healthy panic threshold: a lone instance ejected for slow answers keeps
    getting traffic (a slow answer beats a 503), and so does a pool mostly ejected."""
    policy = OutlierPolicy(consecutive_failures=1)
    lone = pool_of("v1", policy=policy)
    assert lone.end(lone.instances["i0"], ok=False)
    assert lone.ejected_ids() == ["i0"]
    assert lone.choose() is lone.instances["i0"] and lone.panics == 1
    assert lone.choose(exclude={"i0"}) is None  # a retry still never goes back to it

    strict = pool_of("v1", policy=OutlierPolicy(consecutive_failures=1, panic_threshold_percent=0))
    assert strict.end(strict.instances["i0"], ok=False)
    assert strict.choose() is None and strict.panics == 0

    unbounded = OutlierPolicy(consecutive_failures=1, max_ejected_percent=100)
    most = pool_of("v1", "v1", "v1", "v1", policy=unbounded)
    for i in ("i0", "i1"):
        assert most.end(most.instances[i], ok=False)
    # Half left: no panic, the ejected two are skipped.
    assert {most.choose().id for _ in range(8)} == {"i2", "i3"}  # type: ignore[union-attr]
    assert most.end(most.instances["i2"], ok=False)
    assert {most.choose().id for _ in range(8)} == {"i0", "i1", "i2", "i3"}  # type: ignore[union-attr]
    assert most.panics == 8


def test_replace_keeps_state_of_instances_that_stay() -> None:
    pool = pool_of("v1", "v1")
    pool.begin(pool.instances["i0"])
    pool.replace([("i0", "127.0.0.1", 9000, "v1"), ("i9", "127.0.0.1", 9009, "v2")])
    assert pool.instances["i0"].outstanding == 1
    assert set(pool.instances) == {"i0", "i9"} and pool.versions() == {"v1": 1, "v2": 1}


def test_retry_budget_limits_retries_to_a_share_of_traffic() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window=2.0, clock=clock)
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    for _ in range(10):
        budget.record_request()
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()
    clock.now += 1.0
    assert budget.try_spend()
    assert (budget.spent, budget.refused) == (5, 2)
