"""The whole local platform's memory, idle and at the saga load: prints figures and verdicts.

    python -m loadtests.bench_memory [--settle 15] [--seconds 30] [--rate 660] [--json PATH]

``meshctl up`` in a temporary home (every process ``make up`` starts: the supervisor, the
gateway and one replica of each service, tansu, Redis/valkey, the Consul registry and the
console), then the RSS of each process and their sum: idle (after ``--settle`` seconds), and
the peak of the sum while orders are POSTed through the gateway at ``--rate`` per second for
``--seconds`` (the saga's target load, issue 19). RSS counts a page shared by two processes
twice (the interpreter's libraries): the sum is what the target is judged on, the PSS
(shared pages split between their users) is printed beside it.

Targets (issue 19): under 450 MB idle, under 600 MB at the saga load. RSS hardly moves with
the machine's load, so these figures hold on a shared machine; the rate achieved does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from infra.local.files import HomeFiles, read_json
from loadtests.bench_console import local_platform, platform_pids
from loadtests.bench_report import REPORTS, machine, now_iso
from loadtests.bench_saga import BODIES, JSON

IDLE_TARGET_MB = 450.0
LOAD_TARGET_MB = 600.0
MB = 1e6


def say(message: str) -> None:
    print(message, flush=True)


def processes(home: Path) -> dict[str, psutil.Process]:
    """Every process of the platform in ``home``, named: the ones the runtime knows of, the
    console, and any other process started with ``MESH_HOME=home`` (a helper nobody lists
    would otherwise escape the sum)."""
    found: dict[int, str] = {pid: name for name, pid in platform_pids(home).items()}
    console = read_json(home / "console.json") or {}
    if isinstance(console.get("pid"), int):
        found[console["pid"]] = "console"
    for process in psutil.process_iter(["pid", "name"]):
        if process.pid in found:
            continue
        try:
            if process.environ().get("MESH_HOME") == str(home):
                found[process.pid] = f"{process.info['name']}?"
        except psutil.Error:
            continue
    # A replica may be a wrapper with children (none today): count the whole tree.
    named: dict[str, psutil.Process] = {}
    for pid, name in found.items():
        try:
            process = psutil.Process(pid)
            named[name] = process
            for n, child in enumerate(process.children(recursive=True)):
                if child.pid not in found:
                    named[f"{name}/child{n}"] = child
        except psutil.Error:
            continue
    return named


@dataclass
class Sample:
    rss: dict[str, float]  # MB per process
    pss: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.rss.values())

    @property
    def total_pss(self) -> float:
        return sum(self.pss.values())


def sample(named: Mapping[str, psutil.Process]) -> Sample:
    rss, pss = {}, {}
    for name, process in named.items():
        try:
            full = process.memory_full_info()
        except psutil.Error:
            continue
        rss[name] = full.rss / MB
        pss[name] = getattr(full, "pss", full.rss) / MB
    return Sample(rss, pss)


def table(idle: Sample, load: Sample | None) -> None:
    head = f"{'process':<28} {'idle RSS':>9} {'idle PSS':>9}"
    if load:
        head += f" {'load RSS':>9} {'load PSS':>9}"
    say(head + "   (MB)")
    for name in sorted(idle.rss, key=lambda n: -idle.rss[n]):
        line = f"{name:<28} {idle.rss[name]:>9.1f} {idle.pss[name]:>9.1f}"
        if load:
            line += f" {load.rss.get(name, 0):>9.1f} {load.pss.get(name, 0):>9.1f}"
        say(line)
    line = f"{'total':<28} {idle.total:>9.1f} {idle.total_pss:>9.1f}"
    if load:
        line += f" {load.total:>9.1f} {load.total_pss:>9.1f}"
    say(line)


async def drive(url: str, key: str, rate: float, seconds: float) -> tuple[int, Counter[str]]:
    """POST orders through the gateway on a fixed schedule; (accepted, failures by kind)."""
    accepted = 0
    failed: Counter[str] = Counter()
    headers = {**JSON, "X-API-Key": key}
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            nonlocal accepted
            try:
                async with session.post(
                    f"{url}/api/orders", data=BODIES[n % len(BODIES)], headers=headers
                ) as response:
                    await response.read()
                    if response.status == 202:
                        accepted += 1
                    else:
                        failed[f"HTTP {response.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                failed[type(exc).__name__] += 1

        tasks = []
        started = time.perf_counter()
        n = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            due = started + n / rate
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            tasks.append(asyncio.create_task(one(n)))
            n += 1
        del elapsed
        await asyncio.gather(*tasks)
    return accepted, failed


def at_load(
    home: Path, named: Mapping[str, psutil.Process], rate: float, seconds: float
) -> tuple[Sample, dict[str, Any]]:
    """The sample with the largest total while the load ran (one a second)."""
    runtime = read_json(HomeFiles(home).runtime) or {}
    gateway_url = str(runtime.get("gateway", {}).get("url", "")) or _gateway_url(home)
    key = str((read_json(HomeFiles(home).secrets) or {})["api_key"])
    peak: list[Sample] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            now = sample(named)
            if not peak or now.total > peak[0].total:
                peak[:] = [now]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    accepted, failed = asyncio.run(drive(gateway_url, key, rate, seconds))
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    last = sample(named)
    best = peak[0] if peak and peak[0].total > last.total else last
    return best, {
        "offered_rps": rate,
        "accepted": accepted,
        "failed": dict(failed),
        "accepted_rps": round(accepted / wall, 1),
    }


def _gateway_url(home: Path) -> str:
    from infra.local.runtime import LocalRuntime

    return LocalRuntime(home).status().gateway.url  # type: ignore[union-attr]


def measure(settle: float, rate: float, seconds: float, env: Mapping[str, str]) -> dict[str, Any]:
    started_on = machine()
    with local_platform(dict(env)) as (_, home):
        say(f"  platform up; settling for {settle:g}s")
        time.sleep(settle)
        named = processes(home)
        idle = sample(named)
        say(f"  idle: {len(named)} processes, {idle.total:.1f} MB RSS, {idle.total_pss:.1f} PSS")
        say(f"  the saga load: orders through the gateway at {rate:g}/s for {seconds:g}s")
        load, drove = at_load(home, named, rate, seconds)
        say(
            f"  at load: {load.total:.1f} MB RSS ({drove['accepted']} accepted, "
            f"{drove['accepted_rps']}/s, failed: {drove['failed'] or 'none'})"
        )
    table(idle, load)
    return {
        "machine": machine() | {"load_average_1m_at_start": started_on["load_average_1m"]},
        "measured_at": now_iso(),
        "processes": len(named),
        "idle_rss_mb": round(idle.total, 1),
        "idle_pss_mb": round(idle.total_pss, 1),
        "load_rss_mb": round(load.total, 1),
        "load_pss_mb": round(load.total_pss, 1),
        "idle": {k: round(v, 1) for k, v in idle.rss.items()},
        "load": {k: round(v, 1) for k, v in load.rss.items()},
        "load_run": drove,
        "targets": {
            "idle": {
                "name": f"platform RSS idle < {IDLE_TARGET_MB:.0f} MB",
                "value": round(idle.total, 1),
                "met": idle.total < IDLE_TARGET_MB,
                "figure": f"{idle.total:.0f} MB ({len(named)} processes, PSS "
                f"{idle.total_pss:.0f} MB)",
            },
            "load": {
                "name": f"platform RSS at the saga load < {LOAD_TARGET_MB:.0f} MB",
                "value": round(load.total, 1),
                "met": load.total < LOAD_TARGET_MB,
                "figure": f"{load.total:.0f} MB at {drove['accepted_rps']:.0f} orders/s "
                f"accepted of {rate:g} offered (PSS {load.total_pss:.0f} MB)",
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before idle RSS")
    parser.add_argument("--rate", type=float, default=660.0, help="orders/s offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--json", type=Path, default=REPORTS / "memory.json")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment"
    )
    args = parser.parse_args(argv)
    # The gateway's per-key rate limit (500/s) would answer most of the load with 429s: the
    # memory at the saga load is the memory of orders flowing.
    env = {"GATEWAY_RATE_LIMIT_RPS": "0", **dict(item.split("=", 1) for item in args.env)}
    say("== the local platform's memory (meshctl up, the console included)")
    figures = measure(args.settle, args.rate, args.seconds, env)
    for target in figures["targets"].values():
        say(f"target {target['name']}: {target['figure']}: {'MET' if target['met'] else 'MISSED'}")
    if figures["machine"].get("loaded"):
        say("note: the machine was loaded: the rate achieved is noisy; RSS hardly is")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
