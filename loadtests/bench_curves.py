"""The saga's curves: POST->terminal latency vs offered orders/s, and throughput vs replicas.

    python -m loadtests.bench_curves [--step-seconds 8] [--json reports/bench/saga_curves.json]

On the local platform as ``make up`` runs it (``meshctl up`` in a temporary home; the
console off, the gateway's rate limit off, the saga benchmark's service settings: payments
5 ms and no failures, 1% of traces sampled), orders are POSTed THROUGH THE GATEWAY on an
open-loop schedule, and each order is timed from its slot in the schedule to its terminal
event (read from Kafka by a consumer of our own, ``loadtests/bench_saga.py``'s watcher):

1. the peak: orders offered faster than the platform can go; the steady terminal rate;
2. the latency curve: 10% to 120% of that peak in 9 steps, p50 and p99 per step, each step
   drained before the next; the knee is the last step that keeps up (terminal rate at least
   95% of the offered rate) with a p99 within 5x the curve's lowest;
3. throughput vs replicas: the steady terminal rate and the platform's CPU per order, one
   replica of each service and two of each (``meshctl scale``), in rounds (1, 2, then 2, 1;
   the median of each), offered 20% over the
   peak (further over, the gateway sheds POSTs with 503 and the run measures the shedding).

Figures go to ``reports/bench/saga_curves.json``; ``make bench``'s report draws them with
the saga benchmark's own figures (``saga.json``). Rates on a shared 2-core machine are
noisy: each figure carries the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from infra.embedded import Infra
from infra.local.files import HomeFiles, read_json
from infra.local.runtime import LocalRuntime
from loadtests import bench_saga
from loadtests.bench_console import SAGA_ENV, local_platform, platform_pids
from loadtests.bench_report import REPORTS, machine, now_iso

CURVE_SHARES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.1, 1.2)
KEEPS_UP = 0.95
KNEE_P99_RISE = 5.0


def say(message: str) -> None:
    print(message, flush=True)


async def drive_gateway(
    url: str, key: str, run: bench_saga.Run, orders: int, rate: float, connections: int = 256
) -> None:
    """POST ``orders`` orders through the gateway at ``rate`` per second, open loop: no cap
    on orders in flight but the connection pool, and each order timed from its SLOT in the
    schedule (a send held up by the pool is latency, not left out)."""
    headers = {**bench_saga.JSON, "X-API-Key": key}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(n: int, due: float) -> None:
            body = bench_saga.BODIES[n % len(bench_saga.BODIES)]
            try:
                async with session.post(f"{url}/api/orders", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 202:
                        run.errors[f"HTTP {r.status}"] += 1
                        return
                    order_id = r.headers["Location"].rsplit("/", 1)[1]
            except (aiohttp.ClientError, TimeoutError) as exc:
                run.errors[type(exc).__name__] += 1
                return
            run.sent_at[order_id] = due
            run.post_latency.append(time.perf_counter() - due)

        tasks = []
        run.started = time.perf_counter()
        for n in range(orders):
            due = run.started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            run.sent += 1
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
        run.sending_done = time.perf_counter()


async def measure(
    home: Path, orders: int, rate: float, timeout: float = 90.0
) -> tuple[bench_saga.Run, float]:
    """One open-loop run on the platform in ``home``: the run and its wall time."""
    gateway_url, key = gateway_of(home)
    run = bench_saga.Run()
    ready = asyncio.Event()
    bootstrap = Infra(home).endpoints.kafka_bootstrap
    watcher = asyncio.create_task(bench_saga.watch_terminal(bootstrap, run, ready))
    await asyncio.wait_for(ready.wait(), 30)
    started = time.perf_counter()
    await drive_gateway(gateway_url, key, run, orders, rate)
    try:
        await asyncio.wait_for(run.all_terminal.wait(), timeout)
    except TimeoutError:
        say(f"    {len(run.sent_at) - len(run.terminal_at)} orders not terminal in {timeout:g}s")
    wall = time.perf_counter() - started
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return run, wall


def gateway_of(home: Path) -> tuple[str, str]:
    files = HomeFiles(home)
    status = LocalRuntime(home).status()
    assert status.gateway is not None, "the gateway is not running"
    return status.gateway.url, str((read_json(files.secrets) or {})["api_key"])


def figures_of(run: bench_saga.Run) -> dict[str, float]:
    done = [o for o in run.sent_at if o in run.terminal_at]
    e2e = [run.terminal_at[o] - run.sent_at[o] for o in done]
    # The rate orders came out at: from the first terminal event to the last. With a steady
    # latency L the orders end over the same span they were offered in (shifted by L), so
    # this is the offered rate while the platform keeps up, and its capacity when it cannot
    # (from the first slot instead, a step would be short by its own latency).
    ends = sorted(run.terminal_at.values())
    span = ends[-1] - ends[0] if len(ends) > 1 else 0.0
    return {
        "accepted": len(run.sent_at),
        "terminal": len(done),
        "errors": sum(run.errors.values()),
        "achieved": (len(ends) - 1) / span if span > 0 else 0.0,
        "steady_rps": bench_saga._steady_rate(run) or 0.0,
        "p50_ms": bench_saga._percentile(e2e, 0.50) * 1000,
        "p99_ms": bench_saga._percentile(e2e, 0.99) * 1000,
    }


def step(home: Path, rate: float, seconds: float, label: str) -> dict[str, float]:
    orders = max(int(rate * seconds), 50)
    say(f"  {label}: {orders} orders at {rate:,.0f}/s offered ...")
    run, _ = asyncio.run(measure(home, orders, rate))
    f = figures_of(run)
    say(
        f"    terminal {f['terminal']}/{f['accepted']} ({f['errors']} errors), "
        f"{f['achieved']:.0f}/s, p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms"
    )
    return {"offered": rate, **f}


def knee_of(steps: list[dict[str, float]]) -> float | None:
    knee = None
    floor = min((s["p99_ms"] for s in steps), default=0.0)
    for s in steps:
        if s["achieved"] < KEEPS_UP * s["offered"] or s["p99_ms"] > KNEE_P99_RISE * floor:
            return knee
        knee = s["offered"]
    return None  # kept up at every step: no knee within the range


def cpu_run(home: Path, orders: int, rate: float) -> dict[str, float]:
    """A run at ``rate`` with the platform's CPU per order (every process of the platform)."""
    pids = platform_pids(home)
    before = bench_saga.cpu_seconds(pids)
    run, _ = asyncio.run(measure(home, orders, rate))
    after = bench_saga.cpu_seconds(pids)
    used = sum(after[n] - before[n] for n in after if n in before)
    f = figures_of(run)
    f["cpu_per_order_ms"] = used / max(f["terminal"], 1) * 1000
    return f


def scale_all(home: Path, replicas: int, timeout: float = 90.0) -> None:
    runtime = LocalRuntime(home)
    for name in bench_saga.SERVICES:
        runtime.scale(name, replicas)
    deadline = time.monotonic() + timeout
    while True:
        ready = [r for r in runtime.replicas() if r.state == "ready"]
        services = [
            bench_saga.Service(r.service, int(r.port), None)  # type: ignore[arg-type]
            for r in ready
            if r.service in bench_saga.SERVICES and r.port
        ]
        counts = {n: sum(1 for s in services if s.name == n) for n in bench_saga.SERVICES}
        # Every consumer has its partitions again after the rebalance.
        if all(c == replicas for c in counts.values()) and all(
            bench_saga._consuming(s) for s in services
        ):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-curves: not {replicas} ready replicas each: {counts}")
        time.sleep(0.5)


def replica_rows(runs: Mapping[int, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per replica count, the median of its rounds. Its rate is the one orders came out at
    (first to last terminal event, as for the curve): counting only the orders that ended
    while orders were still sent leaves out most of a run whose latency is seconds."""
    return [
        {
            "replicas": n,
            "steady_rps": statistics.median(r["achieved"] for r in rounds),
            **{
                key: statistics.median(r[key] for r in rounds)
                for key in ("cpu_per_order_ms", "p99_ms", "terminal", "errors")
            },
            "rounds": rounds,
        }
        for n, rounds in sorted(runs.items())
    ]


def run_all(
    step_seconds: float, peak_orders: int, replica_orders: int, rounds: int = 2
) -> dict[str, Any]:
    env: Mapping[str, str] = {**SAGA_ENV, "GATEWAY_RATE_LIMIT_RPS": "0", "MESH_CONSOLE": "off"}
    started_on = machine()
    with local_platform(dict(env)) as (_, home):
        say("  warming up: 300 orders")
        asyncio.run(measure(home, 300, 200))
        say("== the peak (offered faster than the platform goes)")
        # Offered well past what 2 cores do, not so far that most POSTs are shed (503).
        peak_run = step(home, 1000, peak_orders / 1000, "peak")
        peak = peak_run["achieved"]
        say(f"  peak: {peak:.0f} terminal orders/s")
        say("== latency vs offered orders/s")
        steps = [
            step(home, peak * share, step_seconds, f"{share:.0%} of the peak")
            for share in CURVE_SHARES
        ]
        knee = knee_of(steps)
        say("== throughput vs replicas")
        # Rounds in turn (1, 2, then 2, 1): the machine drifts, and on a shared one a single
        # run of each can swing by 2x; each figure is the median of its rounds.
        runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        current = 1
        for number in range(rounds):
            for replicas in (1, 2) if number % 2 == 0 else (2, 1):
                if replicas != current:
                    say(f"  scaling every service to {replicas} replica(s) ...")
                    scale_all(home, replicas)
                    current = replicas
                f = cpu_run(home, replica_orders, peak * 1.2)
                runs[replicas].append(f)
                say(
                    f"  round {number + 1}/{rounds}, {replicas} replica(s) of each: "
                    f"{f['achieved']:.0f} orders/s, {f['cpu_per_order_ms']:.2f} ms CPU/order, "
                    f"p99 {f['p99_ms']:.0f} ms, {f['errors']:.0f} POSTs refused"
                )
        rows = replica_rows(runs)
    one, two = rows[0], rows[1]
    efficiency = two["steady_rps"] / (2 * one["steady_rps"]) if one["steady_rps"] else 0.0
    return {
        "machine": machine() | {"load_average_1m_at_start": started_on["load_average_1m"]},
        "measured_at": now_iso(),
        "setup": (
            "local runtime (meshctl up), orders POSTed through the gateway on an open-loop "
            "schedule and timed from their slot to the terminal event; payments 5 ms, no "
            "failures, 1% of traces sampled; the console off"
        ),
        "latency_vs_load": {
            "peak_rps": peak,
            "steps": steps,
            "knee_rps": knee,
            "median_p50_ms": statistics.median(s["p50_ms"] for s in steps),
        },
        "replicas": rows,
        "replica_efficiency": efficiency,
    }


def summary(figures: Mapping[str, Any]) -> None:
    curve = figures["latency_vs_load"]
    knee = f"{curve['knee_rps']:.0f}/s" if curve["knee_rps"] else "none within the range"
    say(
        f"saga latency vs load: peak {curve['peak_rps']:.0f}/s, knee {knee}; p99 "
        + ", ".join(f"{s['offered']:.0f}->{s['p99_ms']:.0f} ms" for s in curve["steps"])
    )
    one, two = figures["replicas"]
    say(
        f"saga throughput vs replicas: 1 of each {one['steady_rps']:.0f}/s "
        f"({one['cpu_per_order_ms']:.2f} ms CPU/order), 2 of each {two['steady_rps']:.0f}/s "
        f"({two['cpu_per_order_ms']:.2f} ms CPU/order): {figures['replica_efficiency']:.0%} "
        "of twice the one-replica rate. On 2 cores the processes already share both cores "
        "with one replica each; a second replica adds partition parallelism and a spare, "
        "not cores."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=8.0, help="offered seconds a step")
    parser.add_argument("--peak-orders", type=int, default=3000)
    parser.add_argument("--replica-orders", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 1 and 2 replicas")
    parser.add_argument("--json", type=Path, default=REPORTS / "saga_curves.json")
    args = parser.parse_args(argv)
    say("== the saga's curves on the local platform (through the gateway)")
    figures = run_all(args.step_seconds, args.peak_orders, args.replica_orders, args.rounds)
    summary(figures)
    if figures["machine"].get("loaded"):
        say("note: the machine was loaded: rates and latencies are noisy")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
