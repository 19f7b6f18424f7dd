"""bench-gateway's open-loop steps: wrk with the slot-stamping script against the bench
upstream (real processes on loopback), and the knee and step-length rules on their own."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.process import ManagedProcess, free_port
from loadtests import bench_gateway
from loadtests.bench_gateway import curve_of, open_loop, parse_open_loop, step_seconds, wait_http


def step(offered: float, achieved: float, p99: float) -> dict[str, float]:
    return {"offered": offered, "achieved": achieved, "p50_ms": p99 / 2, "p99_ms": p99}


def test_the_knee_is_the_last_step_that_keeps_up_with_a_low_p99() -> None:
    kept = [step(100, 100, 1.0), step(200, 199, 1.2), step(300, 299, 2.0)]
    assert curve_of(kept, 250)["knee_rps"] is None  # no step gave way: no knee in range
    behind = [*kept, step(400, 350, 2.0), step(500, 360, 400.0)]
    assert curve_of(behind, 330)["knee_rps"] == 300
    # Keeping the rate with a p99 5x over the curve's lowest is past the knee too; the
    # floor is the lowest p99 anywhere, not a noisy first step's.
    slow = [step(100, 100, 3.0), step(200, 200, 0.8), step(300, 300, 3.9), step(400, 400, 4.1)]
    assert curve_of(slow, 400)["knee_rps"] == 300


def test_low_rates_run_longer_for_their_samples_up_to_three_times() -> None:
    assert step_seconds(10_000, 4) == 4
    assert step_seconds(1_000, 4) == pytest.approx(bench_gateway.MIN_SAMPLES / 1_000)
    assert step_seconds(100, 4) == 12


def test_a_step_without_its_summary_line_or_with_unstamped_answers_is_refused() -> None:
    with pytest.raises(ValueError, match="no mesh-open-loop line"):
        parse_open_loop("Requests/sec: 10\n", 10, 1)
    out = (
        "     50%  1.00ms\n     99%  2.00ms\n"
        "mesh-open-loop: counted 90 unstamped 3 p50_us 900.0 p90_us 1500.0 p99_us 1900.0\n"
    )
    with pytest.raises(ValueError, match="3 answers came back without X-Bench-Due"):
        parse_open_loop(out, 100, 1)
    good = parse_open_loop(out.replace("unstamped 3", "unstamped 0"), 100, 1)
    assert (good.achieved, good.p50_ms, good.p99_ms, good.wrk_p99_ms) == (90, 0.9, 1.9, 2.0)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-tools)")
def test_wrk_keeps_the_rate_and_times_answers_from_their_slot(tmp_path: Path) -> None:
    port = free_port()
    upstream = ManagedProcess(
        "upstream",
        [sys.executable, "-m", "loadtests.bench_upstream", "--port", str(port)],
        log_path=tmp_path / "upstream.log",
    )
    upstream.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", "upstream", upstream)
        r = open_loop(
            tmp_path,
            "test",
            f"http://127.0.0.1:{port}/stock",
            400,
            connections=8,
            seconds=2,
            warmup=1,
            headers={},
        )
    finally:
        upstream.stop()
    # Every answer of the measured 2 s came back stamped, at the rate offered (the last
    # slots' answers may miss the end of the run; wrk's clock starts before the schedule's).
    assert 0.85 * 800 <= r.counted <= 1.1 * 800, r
    assert 0 < r.p50_ms <= r.p99_ms < 1000, r


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench-tools)")
def test_a_stall_counts_for_every_request_due_during_it(tmp_path: Path) -> None:
    """The upstream stopped for 0.4 s in the measured part: the ~160 requests due meanwhile
    (a fifth of the 800) wait for one of the 2 connections, so timed from their slot the
    slowest tenth waited 0.2-0.4 s, though wrk, timing from the write, sees only the 2 that
    were in flight when it stopped (its p90 stays at the service time)."""
    port = free_port()
    upstream = ManagedProcess(
        "upstream",
        [sys.executable, "-m", "loadtests.bench_upstream", "--port", str(port)],
        log_path=tmp_path / "upstream.log",
    )
    upstream.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", "upstream", upstream)
        assert upstream.pid is not None
        pid = upstream.pid

        def stall() -> None:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.4)  # the stall under test, not a wait for a condition
            os.kill(pid, signal.SIGCONT)

        timer = threading.Timer(1.8, stall)
        timer.start()
        r = open_loop(
            tmp_path,
            "stalled",
            f"http://127.0.0.1:{port}/stock",
            400,
            connections=2,
            seconds=2,
            warmup=1,
            headers={},
        )
        timer.join()
    finally:
        upstream.stop()
    assert r.p90_ms > 100 and r.p99_ms > 250, r
