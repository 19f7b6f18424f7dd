"""``meshctl up|down|status|scale|autoscale``: the platform as a whole, on any runtime."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Mapping
from typing import Any

from infra.console.files import console_url, start_console, stop_console
from infra.embedded import Infra, StartError, mesh_home
from infra.embedded.persistence import FSYNC_WINDOW
from infra.meshctl.output import CommandError, print_table, progress
from infra.runtime import Runtime
from infra.runtime.base import PartialStart
from infra.runtime.models import (
    ConsoleInfo,
    GatewayInfo,
    LimitsEnforcement,
    PlatformStatus,
    ReplicaInfo,
)
from infra.runtime.versions import cpu_text, memory_text

SAMPLE_ORDER = '{"customer_id": "c-1", "items": [{"sku": "SKU-001", "quantity": 1}]}'


def _state_cell(replicas: list[ReplicaInfo]) -> str:
    if not replicas:
        return "-"
    ready = sum(1 for r in replicas if r.state == "ready")
    others = sorted({r.state for r in replicas if r.state != "ready"})
    return f"{ready}/{len(replicas)} passing" + (f" ({', '.join(others)})" if others else "")


def print_services(state: PlatformStatus, replicas: list[ReplicaInfo]) -> None:
    names = ([state.gateway.name] if state.gateway else []) + [s.name for s in state.services]
    rows = []
    for name in names:
        mine = [r for r in replicas if r.service == name]
        versions: dict[str, int] = {}
        for r in mine:
            versions[r.version] = versions.get(r.version, 0) + 1
        restarts = sum(r.restarts for r in mine)
        rows.append(
            (
                name,
                str(len(mine)),
                " ".join(f"{v}x{n}" for v, n in sorted(versions.items())) or "-",
                ", ".join(r.address for r in mine) or "-",
                _state_cell(mine) + (f", {restarts} restarts" if restarts else ""),
            )
        )
    print_table(("SERVICE", "REPLICAS", "VERSIONS", "ADDRESSES", "HEALTH"), rows)


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024**2:.0f}Mi"


def _use(use: str, limit: str | None) -> str:
    return f"{use} / {limit or 'no limit'}"


def print_replicas(replicas: list[ReplicaInfo], limits: LimitsEnforcement | None) -> None:
    """Each replica: its restarts and why it last ended, memory and CPU against its limits."""
    rows = []
    for r in replicas:
        restarts = str(r.restarts) + (f" ({r.last_reason})" if r.last_reason else "")
        memory_limit = memory_text(r.memory_limit_bytes) if r.memory_limit_bytes else None
        cpu_limit = cpu_text(r.cpu_limit_millicores) if r.cpu_limit_millicores else None
        cpu = "-" if r.cpu_percent is None else f"{r.cpu_percent:.0f}%"
        rows.append(
            (
                r.address,
                r.service,
                r.version,
                r.state,
                restarts,
                _use(_mib(r.rss_bytes), memory_limit),
                _use(cpu, cpu_limit),
            )
        )
    header = ("REPLICA", "SERVICE", "VERSION", "STATE", "RESTARTS", "RSS / LIMIT", "CPU / LIMIT")
    print_table(header, rows)
    if limits is not None:
        print(f"limits: {limits.detail}")


def print_next_steps(gateway: GatewayInfo, console: str | None = None) -> None:
    key, url = gateway.api_key, gateway.url
    header = f"-H 'X-API-Key: {key}'"
    print()
    print(f"gateway   {url}")
    if console:
        print(f"console   {console}     (live topology, rollouts, traces; actions: admin token)")
    print(f"API key   {key}")
    print(f"try it    curl -s {header} {url}/api/stock")
    print(
        f"          curl -s {header} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(SAMPLE_ORDER)} {url}/api/orders"
    )
    print("canary    meshctl rollout orders --version v2 --strategy canary")
    print("a trace   meshctl trace ORDER_ID     (the id the POST above answered)")
    print("more      meshctl status | logs SERVICE -f | scale orders=3 | rollout --help")
    print("stop      make down")


def up(runtime: Runtime) -> int:
    print(f"runtime: {runtime.name}")
    if runtime.running():
        print("the platform is already running")
        start_console_with_platform(runtime)
        return status(runtime, as_json=False)
    started = time.monotonic()
    shortfall = None
    try:
        state = runtime.up(progress)
    except KeyboardInterrupt:
        print("interrupted: stopped everything this command had started", file=sys.stderr)
        return 130
    except PartialStart as partial:
        state, shortfall = partial.status, str(partial)
    print(f"platform healthy in {time.monotonic() - started:.1f}s", file=sys.stderr)
    console = start_console_with_platform(runtime)
    print_services(state, runtime.replicas())
    if state.gateway is not None:
        print_next_steps(state.gateway, console)
    if shortfall:
        # Running, but not what was asked for: say so where scripts look, the exit code.
        print(f"meshctl: {shortfall}", file=sys.stderr)
        return 1
    return 0


def start_console_with_platform(runtime: Runtime) -> str | None:
    """``make up`` on the local runtime starts the console too (``MESH_CONSOLE=off`` does
    not); a console that cannot start is said in one line, the platform stays up."""
    if runtime.name != "local" or os.environ.get("MESH_CONSOLE", "").lower() in ("off", "0"):
        return None
    try:
        return start_console(mesh_home(), runtime.name)
    except StartError as exc:
        print(f"meshctl: the console did not start: {exc}", file=sys.stderr)
        return None


def down(runtime: Runtime, volumes: bool = False) -> int:
    stopped = ["console"] if stop_console(mesh_home()) else []
    stopped += runtime.down(progress)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    if volumes:
        removed = runtime.remove_volumes(progress)
        print("removed: " + (", ".join(removed) if removed else "no data was kept"))
    return 0


def console(runtime: Runtime, port: int | None, open_browser: bool, stop: bool, token: bool) -> int:
    """``meshctl console [--port N] [--open] [--stop] [--token]``: the live page."""
    home = mesh_home()
    if stop:
        print("console stopped" if stop_console(home) else "no console was running")
        return 0
    if token:
        admin = runtime.admin_token()
        if not admin:
            raise CommandError(f"the {runtime.name} runtime keeps no admin token here")
        print(admin)
        return 0
    already = console_url(home)
    if already is None and not runtime.running():
        raise CommandError(f"the platform is not running on {runtime.name} (make up first)")
    # Off the local runtime, traces come from Jaeger's query API (compose publishes its UI).
    jaeger = None
    if runtime.name != "local":
        jaeger = os.environ.get("MESH_JAEGER_URL") or (
            f"http://127.0.0.1:{os.environ.get('JAEGER_UI_PORT') or 16686}"
        )
    try:
        url = already or start_console(home, runtime.name, port=port, jaeger=jaeger)
    except StartError as exc:
        raise CommandError(str(exc)) from None
    print(f"console {url}" + ("  (already running)" if already else ""))
    print("viewing needs no token; actions ask for the admin token (meshctl console --token)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    return 0


def keeps(row: Mapping[str, object]) -> str:
    """What a part keeps across a restart or ``make down``, in a few words."""
    if "persistence" in row:
        mode = str(row["persistence"])
        if mode == "off":
            return "nothing (persistence off)"
        where = f" in {row['data']}" if row.get("data") else ""
        if mode in FSYNC_WINDOW:
            return f"append-only file{where}, fsync {mode}"
        return f"{mode}{where}"
    if "storage" in row:
        storage = str(row["storage"])
        return "nothing (memory://)" if storage.startswith("memory://") else storage
    return "-"


def print_infra(rows: list[dict[str, Any]]) -> None:
    print_table(
        ("PART", "SOURCE", "ADDRESS", "PID", "STATE", "KEEPS"),
        [
            (
                str(r["name"]),
                str(r.get("source", "-")),
                str(r.get("address", "-")),
                str(r.get("pid") or "-"),
                str(r.get("state") or "-"),
                keeps(r),
            )
            for r in rows
        ],
    )


def status(runtime: Runtime, as_json: bool) -> int:
    state = runtime.status()
    url = console_url(mesh_home())
    if url is not None:
        state.console = ConsoleInfo(url=url)
    infra_ok = all(part["healthy"] for part in state.infra.values())
    services_ok = all(s.healthy >= s.replicas for s in state.services) and (
        state.gateway is None or state.gateway.healthy
    )
    if as_json:
        # The DESIGN.md shape; a runtime's additions only where it has them.
        extras = {k for k in ("replicas", "limits", "console") if getattr(state, k) is None}
        print(json.dumps(state.model_dump(exclude=extras), indent=2))
        return 0 if infra_ok and services_ok else 1
    if state.gateway is not None:
        replicas = state.replicas if state.replicas is not None else runtime.replicas()
        print_services(state, replicas)
        if any(r.rss_bytes is not None or r.memory_limit_bytes for r in replicas):
            print()
            print_replicas(replicas, state.limits)
        print(f"\ngateway {state.gateway.url}  API key {state.gateway.api_key}")
        print(
            f"console {state.console.url}\n"
            if state.console
            else "console not running (meshctl console)\n"
        )
    else:
        print("platform: not running (make up)\n")
    home = getattr(runtime, "home", None)
    if home is not None:
        print_infra(Infra(home).status())
    elif state.infra:
        # Containers or pods: what the runtime says of each part (what Redis keeps too).
        print_infra([{"name": name, **row} for name, row in state.infra.items()])
    return 0 if infra_ok and services_ok else 1


def parse_scale(arg: str) -> tuple[str, int]:
    name, sep, count = arg.partition("=")
    try:
        replicas = int(count)
    except ValueError:
        replicas = -1
    if not sep or not name or replicas < 0:
        raise CommandError(f"expected SERVICE=N like orders=3, got {arg!r}")
    return name, replicas


def scale(runtime: Runtime, arg: str, timeout: float) -> int:
    name, replicas = parse_scale(arg)
    started = time.monotonic()
    runtime.scale(name, replicas)
    runtime.wait_healthy(name, replicas, timeout=timeout, progress=progress)
    noun = "replica" if replicas == 1 else "replicas"
    print(f"{name}: {replicas} {noun} healthy in {time.monotonic() - started:.1f}s")
    return 0


def autoscale(runtime: Runtime, action: str) -> int:
    state = runtime.autoscale(None if action == "status" else action == "on")
    print(f"autoscaler: {'on' if state.enabled else 'off'}")
    rows = []
    for service, decisions in state.services.items():
        if not decisions:
            rows.append((service, "-", "-", "no decision yet"))
            continue
        last = decisions[-1]
        metrics = ", ".join(
            f"{m.name} {m.value:g}/{m.target:g}" if m.value is not None else f"{m.name} n/a"
            for m in last.metrics
        )
        rows.append((service, f"{last.current} -> {last.desired}", metrics, last.reason))
    if rows:
        print_table(("SERVICE", "REPLICAS", "METRIC/TARGET PER REPLICA", "LAST DECISION"), rows)
    if state.log:
        print(f"every decision: {state.log}")
    return 0
