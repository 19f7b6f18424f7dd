"""The console's metric math on its own: rates across counter resets, window sums, quantiles
from buckets as PromQL computes them, lag from offsets, weights against measured shares,
the frame store's bounds, and the trace index. No process, no network."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.console import series
from infra.console.collector import FrameStore
from infra.console.series import CounterTracker, Flow, Windows
from infra.console.traces import SpanFiles, TraceIndex, jaeger_spans
from infra.local import promtext


# -- counters ------------------------------------------------------------------------------------
def test_increase_per_series_and_across_a_reset() -> None:
    tracker = CounterTracker(fresh=False)
    key = series.series_key("requests_total", {"status": "200"})
    assert tracker.increase(key, 100.0) == 0.0  # running before the console: a baseline
    assert tracker.increase(key, 130.0) == 30.0
    # The replica restarted: its counter starts again from zero and has counted 7 since.
    assert tracker.increase(key, 7.0) == 7.0
    assert tracker.increase(key, 10.0) == 3.0


def test_a_series_that_appears_later_counts_from_zero() -> None:
    tracker = CounterTracker(fresh=False)
    first = series.series_key("requests_total", {"status": "200"})
    tracker.increase(first, 50.0)
    tracker.after_first_scrape()
    # A 500 never answered before shows up with 4: all four happened since the last scrape.
    assert tracker.increase(series.series_key("requests_total", {"status": "500"}), 4.0) == 4.0


def test_a_replica_seen_after_the_console_started_counts_from_zero() -> None:
    assert CounterTracker(fresh=True).increase(series.series_key("x", {}), 12.0) == 12.0


# -- windows -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), min_size=1, max_size=400))
def test_running_window_sums_equal_a_sum_over_the_last_seconds(
    seconds: list[tuple[int, int]],
) -> None:
    windows = Windows()
    for requests, errors in seconds:
        windows.push(Flow(float(requests), float(min(errors, requests)), {}, 1.0))
    stats = windows.stats()
    for name, length in series.WINDOWS.items():
        last = seconds[-length:]
        total = sum(r for r, _ in last)
        errors = sum(min(e, r) for r, e in last)
        assert stats[name]["requests"] == total
        assert stats[name]["errors"] == errors
        assert stats[name]["rps"] == round(total / len(last), 2)
        expected = round(100.0 * errors / total, 2) if total else None
        assert stats[name]["err_pct"] == expected


def test_a_window_rate_uses_the_measured_time_of_its_seconds() -> None:
    windows = Windows()
    for _ in range(10):
        windows.push(Flow(20.0, 0.0, {}, 2.0))  # slow ticks: two seconds each
    assert windows.stats()["10s"]["rps"] == 10.0


def _cumulative(values: list[float], bounds: list[float]) -> dict[float, float]:
    return {b: float(sum(1 for v in values if v <= b)) for b in [*bounds, math.inf]}


def test_quantiles_from_buckets_follow_histogram_quantile() -> None:
    # Known answers: PromQL interpolates linearly inside the bucket holding the rank.
    buckets = {0.1: 10.0, 0.2: 20.0, 0.5: 30.0, math.inf: 40.0}
    assert promtext.quantile(0.25, buckets) == pytest.approx(0.1)
    assert promtext.quantile(0.5, buckets) == pytest.approx(0.2)
    assert promtext.quantile(0.625, buckets) == pytest.approx(0.35)
    # The rank falls in the +Inf bucket: the highest finite bound, as PromQL answers.
    assert promtext.quantile(0.99, buckets) == pytest.approx(0.5)
    assert promtext.quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


def test_window_percentiles_come_from_summed_bucket_increases() -> None:
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
    rng = random.Random(3)
    windows = Windows()
    everything: list[float] = []
    for _ in range(12):
        values = [rng.choice([0.003, 0.008, 0.02, 0.04, 0.2]) for _ in range(50)]
        everything += values
        windows.push(Flow(50.0, 0.0, _cumulative(values, bounds), 1.0))
    ten = everything[-500:]
    expected = promtext.quantile(0.99, _cumulative(ten, bounds))
    assert expected is not None
    assert windows.stats()["10s"]["p99_ms"] == round(expected * 1000, 1)


# -- lag, shares, health -------------------------------------------------------------------------
def test_lag_from_offsets() -> None:
    end = {("order.created", 0): 10, ("order.created", 1): 7, ("order.created", 2): 0}
    committed = {("order.created", 0): 4, ("order.created", 1): -1, ("order.created", 2): 3}
    # 6 behind on p0, never committed on p1 (its 7 are unread), past the end on p2: no lag.
    assert series.lag_from_offsets(end, committed) == {"order.created": 13}


def test_shares_against_weights() -> None:
    assert series.shares({"v1": 90.0, "v2": 10.0}) == {"v1": 90.0, "v2": 10.0}
    assert series.shares({"v1": 0.0, "v2": 0.0}) == {"v1": None, "v2": None}
    assert series.shares({"v1": 2.0, "v2": 1.0}) == {"v1": 66.7, "v2": 33.3}


def test_health_thresholds() -> None:
    assert series.health(None, 0) == "idle"
    assert series.health(0.0, 100) == "ok"
    assert series.health(0.09, 1000) == "ok"
    assert series.health(0.1, 1000) == "degraded"
    assert series.health(10.0, 100) == "degraded"
    assert series.health(10.01, 100) == "failing"
    assert series.worst(["ok", "failing", "degraded"]) == "failing"
    assert series.worst(["ok", "down"]) == "down"


# -- the frame store -----------------------------------------------------------------------------
def test_the_frame_store_keeps_a_bounded_window_and_finds_a_moment() -> None:
    store = FrameStore(keep=5)
    for second in range(10):
        frame = json.dumps({"t": 100.0 + second, "seq": second}).encode()
        store.add(100.0 + second, frame, {"t": 100.0 + second})
    assert len(store.frames) == len(store.ticks) == 5
    assert store.span == (105.0, 109.0)
    assert json.loads(store.at(107.5) or b"")["seq"] == 7
    assert json.loads(store.at(None) or b"")["seq"] == 9
    assert json.loads(store.at(1.0) or b"")["seq"] == 5  # before the window: its oldest


# -- traces --------------------------------------------------------------------------------------
def _span(trace: str, span: str, parent: str | None, service: str, **extra: object) -> bytes:
    body = {
        "trace_id": trace,
        "span_id": span,
        "parent_span_id": parent,
        "name": extra.pop("name", f"{service} work"),
        "kind": "SERVER",
        "service": service,
        "version": extra.pop("version", "v1"),
        "start_unix_nano": extra.pop("start", 1_000),
        "end_unix_nano": extra.pop("end", 2_000_000),
        "status": extra.pop("status", "UNSET"),
        "attributes": extra.pop("attributes", {}),
    }
    return json.dumps(body).encode()


def test_the_trace_index_groups_spans_and_marks_failing_versions() -> None:
    index = TraceIndex()
    index.add_lines(
        [
            _span("a" * 32, "1", None, "gateway", name="POST /api/orders"),
            _span(
                "a" * 32,
                "2",
                "1",
                "orders",
                version="v3",
                status="ERROR",
                attributes={"messaging.kafka.message.key": "order-7"},
            ),
            _span("b" * 32, "3", None, "gateway", name="GET /api/stock"),
        ]
    )
    found = index.search(outcome="error")
    assert [t["trace_id"] for t in found] == ["a" * 32]
    assert found[0]["root"] == "POST /api/orders"
    assert found[0]["order_id"] == "order-7"
    assert index.failing["orders@v3"] == "a" * 32
    assert [t["trace_id"] for t in index.search(outcome="ok")] == ["b" * 32]
    assert [t["trace_id"] for t in index.search(order="order-7")] == ["a" * 32]
    assert index.search(service="orders", min_ms=5) == []


def test_the_trace_index_stays_within_its_bounds() -> None:
    index = TraceIndex(max_traces=10, max_bytes=10_000)
    for n in range(100):
        index.add_lines([_span(f"{n:032x}", "1", None, "gateway")])
    assert len(index.traces) <= 10
    assert index.bytes <= 10_000
    assert f"{99:032x}" in index.traces and f"{0:032x}" not in index.traces


def test_a_flood_of_spans_is_thinned_by_whole_traces() -> None:
    index = TraceIndex()
    lines = [
        _span(f"{t:032x}", f"{n:016x}", None if n == 0 else f"{0:016x}", "orders")
        for t in range(400)
        for n in range(10)
    ]
    added = index.add_lines(lines, budget=1000)
    assert 500 < added < 1600 and index.kept_share == 0.25
    # Every trace kept has all ten of its spans: none was cut in half.
    assert {summary.spans for summary in index.traces.values()} == {10}


def test_span_files_follow_appends_partial_lines_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    files = SpanFiles(tmp_path)
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert list(files.poll()) == [b'{"a": 1}']
    with open(path, "ab") as fh:
        fh.write(b': 2}\n{"c": 3}\n')
    assert list(files.poll()) == [b'{"b": 2}', b'{"c": 3}']
    assert list(files.poll()) == []
    path.write_bytes(b'{"d": 4}\n')  # truncated and written again
    assert list(files.poll()) == [b'{"d": 4}']


def test_jaeger_traces_become_the_local_span_shape() -> None:
    body = {
        "data": [
            {
                "traceID": "abc123",
                "spans": [
                    {
                        "traceID": "abc123",
                        "spanID": "s2",
                        "operationName": "process order.created",
                        "references": [
                            {"refType": "CHILD_OF", "traceID": "abc123", "spanID": "s1"}
                        ],
                        "startTime": 1_700_000_000_000_000,
                        "duration": 1500,
                        "tags": [
                            {"key": "span.kind", "type": "string", "value": "consumer"},
                            {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        ],
                        "processID": "p1",
                    }
                ],
                "processes": {
                    "p1": {
                        "serviceName": "inventory",
                        "tags": [{"key": "service.version", "type": "string", "value": "v2"}],
                    }
                },
            }
        ]
    }
    (span,) = list(jaeger_spans(body))
    assert span["trace_id"] == "abc123".rjust(32, "0")
    assert span["parent_span_id"] == "s1"
    assert (span["service"], span["version"], span["kind"]) == ("inventory", "v2", "CONSUMER")
    assert span["status"] == "ERROR"
    assert span["end_unix_nano"] - span["start_unix_nano"] == 1_500_000
