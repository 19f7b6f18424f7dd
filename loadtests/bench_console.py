"""What the console costs: prints figures and a verdict per target, asserts nothing.

    python -m loadtests.bench_console [--phase 20] [--orders 3000] [--rate 200] [--rounds 2]

1. The default local platform (``meshctl up`` in a temporary home, the console with it at its
   1 s refresh): the console's CPU (% of one core) and RSS idle, with a browser attached (a
   real Chromium holding the page and its stream), and with the browser attached under a
   Locust load; the first paint with data (navigation to the first frame on screen, measured
   by the page, median of five fresh loads under that load); and the recorded window's size,
   projected to its full 15 minutes.
2. The saga (orders POSTed straight to the orders service at ``--rate``, terminal events
   read from Kafka: ``loadtests/bench_saga.py``'s measurement, with its settings: payments
   5 ms, 1% of traces sampled) on a local platform with the console stopped, then running,
   ``--rounds`` times each, alternating: the platform's CPU per order without the console,
   and with it (the console's own CPU counted in), so the slowdown is the share of capacity
   the console takes.

Targets (issue 14): console at most 5% of one core and 100 MB RSS with a browser attached;
the saga slowed by less than 3%; the first paint under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from infra.console.files import console_url, start_console, stop_console
from infra.embedded import Infra
from infra.local.runtime import LocalRuntime
from infra.process import free_port
from loadtests import bench_saga

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CONSOLE_CPU_TARGET = 5.0
CONSOLE_RSS_TARGET_MB = 100.0
SAGA_SLOWDOWN_TARGET = 3.0
FIRST_PAINT_TARGET_MS = 1000.0
# What the saga benchmark sets for every service (loadtests/bench_saga.py).
SAGA_ENV = {
    "LOG_LEVEL": "WARNING",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
    "PAYMENTS_LATENCY_MS": "5",
    "PAYMENTS_JITTER_MS": "2",
    "PAYMENTS_FAILURE_RATE": "0",
    "INVENTORY_INITIAL_STOCK": "1000000000",
}


def say(message: str) -> None:
    print(message, flush=True)


@contextmanager
def local_platform(extra_env: Mapping[str, str]) -> Iterator[tuple[dict[str, str], Path]]:
    home = Path(tempfile.mkdtemp(prefix="bench-console-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")
    }
    env.update(
        extra_env,
        MESH_HOME=str(home),
        GATEWAY_PORT=str(free_port()),
        MESH_CONSOLE_PORT=str(free_port()),
        RUNTIME="local",
    )
    say(f"starting the local platform in {home} ...")
    up = subprocess.run([*MESHCTL, "up"], env=env, capture_output=True, text=True, check=False)
    if up.returncode != 0:
        raise SystemExit(f"bench-console: meshctl up failed: {up.stderr[-800:]}")
    try:
        yield env, home
    finally:
        subprocess.run([*MESHCTL, "down"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def console_process(home: Path) -> psutil.Process:
    data = json.loads((home / "console.json").read_text())
    return psutil.Process(int(data["pid"]))


@dataclass
class Cost:
    cpu_pct: float
    rss_mb: float


def measure_cost(process: psutil.Process, seconds: float, label: str) -> Cost:
    say(f"  {label}: measuring the console for {seconds:g}s ...")
    before = process.cpu_times()
    started = time.perf_counter()
    peak = 0.0
    while time.perf_counter() - started < seconds:
        peak = max(peak, process.memory_info().rss / 1e6)
        time.sleep(1.0)
    after = process.cpu_times()
    wall = time.perf_counter() - started
    used = (after.user + after.system) - (before.user + before.system)
    cost = Cost(round(100 * used / wall, 2), round(peak, 1))
    say(f"  {label}: {cost.cpu_pct:.2f}% of one core, {cost.rss_mb:.1f} MB RSS")
    return cost


def first_paints(browser: Any, url: str, loads: int = 5) -> list[float]:
    paints = []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.__meshFirstPaint !== undefined", timeout=10_000)
        paints.append(float(page.evaluate("window.__meshFirstPaint")))
        context.close()
    return paints


def load(env: dict[str, str], seconds: float) -> subprocess.Popen[bytes]:
    argv = [*MESHCTL, "load", "--headless", "--users", "10", "--rate", "5"]
    argv += ["--duration", f"{seconds:g}s"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def part_one(phase: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, Any] = {}
    with local_platform({}) as (env, home):
        url = console_url(home)
        assert url is not None, "the console did not start with the platform"
        process = console_process(home)
        figures["idle"] = measure_cost(process, phase, "idle, no browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#topology g.node")
            figures["browser"] = measure_cost(process, phase, "a browser attached")
            locust = load(env, phase + 30)
            time.sleep(5)  # the users started
            figures["browser_load"] = measure_cost(
                process, phase, "a browser attached, Locust 10 users"
            )
            paints = first_paints(browser, url)
            figures["first_paint_ms"] = round(statistics.median(paints), 1)
            say(f"  first paint under load (5 loads, ms): {', '.join(f'{p:.0f}' for p in paints)}")
            locust.terminate()
            locust.wait(timeout=30)
            browser.close()
        with urllib_get(f"{url}/healthz") as health:
            frames = int(health["frames"])
        figures["frames"] = frames
        rss = process.memory_info().rss / 1e6
        store = console_store_bytes(url)
        per_frame = store / max(frames, 1)
        figures["projected_rss_mb"] = round(rss + per_frame * max(0, 900 - frames) / 1e6, 1)
        say(
            f"  recorded window: {frames} frames, {store / 1e6:.2f} MB compressed; the full 15 "
            f"minutes add {per_frame * max(0, 900 - frames) / 1e6:.2f} MB: "
            f"{figures['projected_rss_mb']} MB RSS projected"
        )
    return figures


@contextmanager
def urllib_get(url: str) -> Iterator[Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:
        yield json.loads(answer.read())


def console_store_bytes(url: str) -> float:
    """The recorded frames' size, from the export (the frames are most of it)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/export", timeout=30) as answer:
        return float(len(answer.read()))


def platform_pids(home: Path) -> dict[str, int]:
    runtime = LocalRuntime(home)
    pids = {f"{r.service}:{r.port}": r.pid for r in runtime.replicas() if r.pid}
    pids |= {name: rec.pid for name, rec in Infra(home).records().items() if rec.pid}
    supervisor = runtime.client.pid()
    if supervisor:
        pids["supervisor"] = supervisor
    return {k: v for k, v in pids.items() if v}


def saga_round(home: Path, orders: int, rate: float) -> tuple[float, float, float]:
    """One measured run: (platform CPU ms per order, console CPU ms per order, p99 s)."""
    runtime = LocalRuntime(home)
    services = {
        r.service: bench_saga.Service(r.service, int(r.port), None)  # type: ignore[arg-type]
        for r in runtime.replicas()
        if r.service in bench_saga.SERVICES and r.port
    }
    stack = bench_saga.Platform(services, Infra(home).endpoints.kafka_bootstrap, {})
    pids = platform_pids(home)
    url = console_url(home)
    console = console_process(home) if url else None
    before = bench_saga.cpu_seconds(pids)
    console_before = sum(console.cpu_times()[:2]) if console else 0.0
    started = time.perf_counter()
    run = asyncio.run(bench_saga.measure(stack, orders, 64, rate, 60))
    wall = time.perf_counter() - started
    after = bench_saga.cpu_seconds(pids)
    used = sum(after[n] - before[n] for n in after if n in before)
    console_used = (sum(console.cpu_times()[:2]) - console_before) if console else 0.0
    done = max(len(run.terminal_at), 1)
    e2e = [run.terminal_at[o] - run.sent_at[o] for o in run.sent_at if o in run.terminal_at]
    p99 = bench_saga._percentile(e2e, 0.99)
    mode = "with" if console else "without"
    say(
        f"    {mode} console: {len(run.terminal_at)}/{len(run.sent_at)} terminal in "
        f"{wall:.1f}s, platform {used / done * 1000:.2f} ms CPU/order, console "
        f"{console_used / done * 1000:.3f} ms/order, p99 {p99 * 1000:.0f} ms"
    )
    return used / done * 1000, console_used / done * 1000, p99


def part_two(orders: int, rate: float, rounds: int) -> dict[str, Any]:
    results: dict[str, list[tuple[float, float, float]]] = {"without": [], "with": []}
    with local_platform(SAGA_ENV) as (env, home):
        say("  warming up with 300 orders ...")
        stop_console(home)
        saga_round(home, 300, 0)
        for n in range(rounds):
            for mode in ("without", "with"):
                if mode == "with" and console_url(home) is None:
                    start_console(home, "local", environ=env)
                    time.sleep(3)  # its first ticks (catch-up of the span files) are not the cost
                if mode == "without":
                    stop_console(home)
                say(f"  round {n + 1}/{rounds}, {mode} the console: {orders} orders at {rate:g}/s")
                results[mode].append(saga_round(home, orders, rate))
    without = statistics.median(r[0] for r in results["without"])
    with_platform = statistics.median(r[0] for r in results["with"])
    with_console = statistics.median(r[1] for r in results["with"])
    slowdown = ((with_platform + with_console) / without - 1) * 100
    return {
        "cpu_per_order_without_ms": round(without, 3),
        "cpu_per_order_with_ms": round(with_platform, 3),
        "console_cpu_per_order_ms": round(with_console, 4),
        "slowdown_pct": round(slowdown, 2),
        "p99_without_ms": round(statistics.median(r[2] for r in results["without"]) * 1000, 1),
        "p99_with_ms": round(statistics.median(r[2] for r in results["with"]) * 1000, 1),
    }


def verdict(name: str, ok: bool, detail: str) -> bool:
    say(f"target {name}: {detail}: {'MET' if ok else 'MISSED'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", type=float, default=20.0, help="seconds of each measurement")
    parser.add_argument("--orders", type=int, default=3000, help="orders per saga round")
    parser.add_argument("--rate", type=float, default=200.0, help="orders per second")
    parser.add_argument("--rounds", type=int, default=2, help="saga rounds with and without")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    say("== the console on the default local platform")
    one = part_one(args.phase)
    say("== the saga without and with the console")
    two = part_two(args.orders, args.rate, args.rounds)
    say("")
    rows = [
        (
            "console idle, no browser (% core / MB)",
            f"{one['idle'].cpu_pct:.2f} / {one['idle'].rss_mb:.1f}",
        ),
        (
            "console, a browser attached",
            f"{one['browser'].cpu_pct:.2f} / {one['browser'].rss_mb:.1f}",
        ),
        (
            "console, browser + Locust 10 users",
            f"{one['browser_load'].cpu_pct:.2f} / {one['browser_load'].rss_mb:.1f}",
        ),
        ("RSS with the full 15-minute window (projected, MB)", f"{one['projected_rss_mb']:.1f}"),
        ("first paint with data under load (median, ms)", f"{one['first_paint_ms']:.0f}"),
        (
            "saga CPU per order without / with (ms)",
            f"{two['cpu_per_order_without_ms']:.3f} / {two['cpu_per_order_with_ms']:.3f}",
        ),
        ("console CPU per saga order (ms)", f"{two['console_cpu_per_order_ms']:.4f}"),
        (
            "saga p99 POST -> terminal without / with (ms)",
            f"{two['p99_without_ms']:.0f} / {two['p99_with_ms']:.0f}",
        ),
        ("saga slowed by (capacity taken, %)", f"{two['slowdown_pct']:.2f}"),
    ]
    width = max(len(label) for label, _ in rows)
    say("=" * (width + 24))
    for label, value in rows:
        say(f"{label:<{width}}  {value}")
    say("=" * (width + 24))
    worst_cpu = max(one["browser"].cpu_pct, one["browser_load"].cpu_pct)
    worst_rss = max(one["browser_load"].rss_mb, one["projected_rss_mb"])
    ok = verdict(
        "console CPU <= 5% of a core with a browser",
        worst_cpu <= CONSOLE_CPU_TARGET,
        f"{worst_cpu:.2f}%",
    )
    ok &= verdict(
        "console RSS <= 100 MB (15-minute window)",
        worst_rss <= CONSOLE_RSS_TARGET_MB,
        f"{worst_rss:.1f} MB",
    )
    ok &= verdict(
        "saga slowed < 3%",
        two["slowdown_pct"] < SAGA_SLOWDOWN_TARGET,
        f"{two['slowdown_pct']:.2f}%",
    )
    ok &= verdict(
        "first paint < 1 s",
        one["first_paint_ms"] < FIRST_PAINT_TARGET_MS,
        f"{one['first_paint_ms']:.0f} ms",
    )
    if args.json:
        data = {**{k: (v.__dict__ if isinstance(v, Cost) else v) for k, v in one.items()}, **two}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
