"""``meshctl``: the one command that runs the platform. The Makefile targets call it.

Every failure ends in one line on stderr (``meshctl: ...``) and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.embedded import Infra, StartError, mesh_home
from infra.kafka import clients as kafka_clients
from infra.kafka.admin import ensure_topics
from infra.local.catalog import CatalogError
from infra.local.files import HomeFiles
from infra.local.versions import VersionError
from infra.meshctl import drill, load, platform, rollout, traffic
from infra.meshctl import logs as logs_cmd
from infra.meshctl.output import CommandError, progress
from infra.meshctl.trace import trace
from infra.runtime import Runtime, RuntimeFailure, get_runtime
from infra.runtime.kv import KVError

RUNTIMES = ("local", "compose", "k8s")
# Runtimes whose adapter exists in this version; the others answer with a clear line.
AVAILABLE_RUNTIMES = ("local", "compose", "k8s")


def resolve_runtime(environ: dict[str, str] | None = None) -> str:
    """``RUNTIME`` if set (validated); else the runtime whose platform is up (the local
    supervisor answers, or the compose project has running containers); else local."""
    env = os.environ if environ is None else environ
    wanted = env.get("RUNTIME", "").strip()
    if wanted:
        if wanted not in RUNTIMES:
            raise CommandError(f"unknown RUNTIME={wanted!r}: choose one of {', '.join(RUNTIMES)}")
        if wanted not in AVAILABLE_RUNTIMES:
            raise CommandError(
                f"meshctl has no {wanted} adapter yet: start it with `make up RUNTIME={wanted}` "
                "and use RUNTIME=local for meshctl"
            )
        return wanted
    from infra.compose.detect import running_runtime  # asks docker only when local is down

    return running_runtime(mesh_home(env), env) or "local"


# -- infra -----------------------------------------------------------------------------------
def _infra(detached: bool = True) -> Infra:
    return Infra(mesh_home(), detached=detached, progress=progress)


def infra_up(as_json: bool) -> int:
    infra = _infra()
    if infra.running():
        if not as_json:
            print(f"infrastructure already running (state in {infra.home})")
    else:
        print(f"starting infrastructure (state in {infra.home})", file=sys.stderr)
        started = time.monotonic()
        try:
            infra.up()
        except KeyboardInterrupt:
            print("interrupted: stopped every part that had started", file=sys.stderr)
            return 130
        print(f"infrastructure ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return infra_status(as_json)


def infra_down() -> int:
    stopped = _infra().down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def infra_status(as_json: bool) -> int:
    rows = _infra().status()
    # The address and settings a Kafka client of the user's own needs (infra/kafka/clients.py).
    kafka = next((r for r in rows if r["name"] == "kafka" and r.get("address")), None)
    embedded = kafka is not None and kafka["source"] != "external"
    if as_json:
        state: dict[str, Any] = {"infra": rows}
        if kafka is not None:
            state["kafka_client"] = kafka_clients.client_settings(kafka["address"], embedded)
        print(json.dumps(state, indent=2))
    else:
        platform.print_infra(rows)
        if kafka is not None:
            print("\n".join(kafka_clients.describe(kafka["address"], embedded)))
    return 0 if all(r["healthy"] for r in rows) else 1


def infra_topics() -> int:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        try:
            bootstrap = _infra().endpoints.kafka_bootstrap
        except StartError as exc:
            raise CommandError(f"{exc}; or set KAFKA_BOOTSTRAP_SERVERS") from None
    created = asyncio.run(ensure_topics(bootstrap))
    print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    return 0


# -- platform --------------------------------------------------------------------------------
def _runtime() -> Runtime:
    return get_runtime(resolve_runtime(), mesh_home())


def logs(name: str, follow: bool) -> int:
    home = mesh_home()
    if resolve_runtime() == "compose":
        from infra.compose.runtime import ComposeRuntime

        return ComposeRuntime(home).show_logs(name, follow)
    files = HomeFiles(home)
    records = _infra().records()
    rec = records.get(name)
    if rec is not None and rec.log:
        return logs_cmd.show_file(Path(rec.log), follow)
    special = {"supervisor": files.supervisor_log, "autoscaler": files.autoscaler_log}
    if name in special:
        if not special[name].exists():
            raise CommandError(f"no {name} log yet in {files.logs}")
        return logs_cmd.show_file(special[name], follow)
    if logs_cmd.replica_logs(files.logs, name) or follow:
        return logs_cmd.show_service(files.logs, name, follow)
    parts = [r for r, v in records.items() if v.log]
    services = sorted({p.name.split("-v")[0] for p in files.logs.glob("*-v*-*.log")})
    known = ", ".join([*parts, *services, *(k for k, v in special.items() if v.exists())])
    raise CommandError(f"no logs for {name!r} (known: {known or 'none: is the platform up?'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the platform on RUNTIME (local|compose|k8s), wait healthy")
    p = sub.add_parser("down", help="stop the platform and leave no process behind")
    p.add_argument(
        "--volumes", action="store_true", help="remove the data kept between runs too (Redis)"
    )
    p = sub.add_parser("status", help="show every part and its health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("logs", help="the log of a part, a service (all replicas) or supervisor")
    p.add_argument("name", help="kafka, redis, consul, supervisor, autoscaler, or a service")
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("scale", help="set a service's replicas and wait until all are healthy")
    p.add_argument("target", metavar="SERVICE=N")
    p.add_argument("--timeout", type=rollout.duration, default=60.0)
    rollout.add_parser(sub)
    p = sub.add_parser("autoscale", help="the HPA-style autoscaler: on, off or status")
    p.add_argument("action", choices=("on", "off", "status"))
    p = sub.add_parser("traffic", help="traffic weights and ready instances per version")
    p.add_argument("service", nargs="?")
    p = sub.add_parser("faults", help="inject latency and errors (Consul KV mesh/faults/...)")
    p.add_argument("action", choices=("set", "clear", "show"))
    p.add_argument("service", nargs="?", metavar="SERVICE[@VERSION]")
    p.add_argument("settings", nargs="*", metavar="latency=200ms error_rate=0.2")
    drill.add_parser(sub)
    p = sub.add_parser("console", help="the live page of the running platform (127.0.0.1)")
    p.add_argument("--port", type=int, help="default MESH_CONSOLE_PORT or 8090; 0: any free")
    p.add_argument("--open", action="store_true", help="open it in the default browser")
    p.add_argument("--stop", action="store_true", help="stop the console")
    p.add_argument("--token", action="store_true", help="print the admin token its actions ask")
    load.add_parser(sub)
    p = sub.add_parser("trace", help="the span tree of an order or a trace")
    p.add_argument("id", metavar="ORDER_ID|TRACE_ID")

    infra = sub.add_parser("infra", help="the infrastructure alone (Kafka, Redis, Consul)")
    isub = infra.add_subparsers(dest="infra_command", required=True, metavar="ACTION")
    p = isub.add_parser("up", help="start Kafka, Redis and Consul, wait until each answers")
    p.add_argument("--json", action="store_true")
    isub.add_parser("down", help="stop every embedded part")
    p = isub.add_parser("status", help="each part, where it came from, address and health")
    p.add_argument("--json", action="store_true")
    isub.add_parser("topics", help="create the declared topics on KAFKA_BOOTSTRAP_SERVERS")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command
    if command == "infra":
        if args.infra_command == "up":
            return infra_up(args.json)
        if args.infra_command == "down":
            return infra_down()
        if args.infra_command == "status":
            return infra_status(args.json)
        return infra_topics()
    if command == "logs":
        return logs(args.name, args.follow)
    if command == "trace":
        return trace(HomeFiles(mesh_home()).traces, args.id)
    if command == "drill" and args.name == "list":
        return drill.list_drills()
    runtime = (
        get_runtime(args.runtime, mesh_home()) if getattr(args, "runtime", None) else _runtime()
    )
    if command == "drill":
        return drill.run(runtime, args)
    if command == "up":
        return platform.up(runtime)
    if command == "down":
        return platform.down(runtime, args.volumes)
    if command == "status":
        return platform.status(runtime, args.json)
    if command == "console":
        return platform.console(runtime, args.port, args.open, args.stop, args.token)
    if command == "load":
        return load.run(runtime, args)
    if command == "scale":
        return platform.scale(runtime, args.target, args.timeout)
    if command == "autoscale":
        return platform.autoscale(runtime, args.action)
    if command == "rollout":
        return rollout.run(runtime, args)
    if command == "traffic":
        return traffic.traffic(runtime, args.service)
    return traffic.faults(runtime, args.action, args.service, args.settings)


FAILURES = (
    CommandError,
    StartError,
    TimeoutError,
    RuntimeFailure,
    CatalogError,
    VersionError,
    KVError,
)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except FAILURES as exc:
        print(f"meshctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meshctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
