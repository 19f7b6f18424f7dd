"""``meshctl``: the one command that runs the platform. The Makefile targets call it.

Every failure ends in one line on stderr (``meshctl: ...``) and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.embedded import Infra, StartError, mesh_home
from infra.kafka.admin import ensure_topics

RUNTIMES = ("local", "compose", "k8s")
# Runtimes whose adapter exists in this version; the others answer with a clear line.
AVAILABLE_RUNTIMES = ("local",)


class CommandError(Exception):
    """A failure to report as one line and exit 1."""


def progress(message: str) -> None:
    # Progress goes to stderr so that stdout stays machine-readable with --json.
    print(f"  {message}", file=sys.stderr, flush=True)


def docker_engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def resolve_runtime(environ: dict[str, str] | None = None) -> str:
    """``RUNTIME`` if set (validated), else compose when a Docker engine answers, else local."""
    env = os.environ if environ is None else environ
    wanted = env.get("RUNTIME", "").strip()
    if wanted:
        if wanted not in RUNTIMES:
            raise CommandError(f"unknown RUNTIME={wanted!r}: choose one of {', '.join(RUNTIMES)}")
        if wanted not in AVAILABLE_RUNTIMES:
            raise CommandError(
                f"RUNTIME={wanted} is not available in this version yet; use RUNTIME=local"
            )
        return wanted
    if "compose" in AVAILABLE_RUNTIMES and docker_engine_answers():
        return "compose"
    return "local"


# -- infra -----------------------------------------------------------------------------------
def _infra(detached: bool = True) -> Infra:
    return Infra(mesh_home(), detached=detached, progress=progress)


def _print_infra_table(rows: list[dict[str, Any]]) -> None:
    header = ("PART", "SOURCE", "ADDRESS", "PID", "STATE")
    table = [header] + [
        (
            r["name"],
            r.get("source", "-"),
            r.get("address", "-"),
            str(r.get("pid") or "-"),
            r["state"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


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
    if as_json:
        print(json.dumps({"infra": rows}, indent=2))
    else:
        _print_infra_table(rows)
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
def platform_status_json() -> dict[str, Any]:
    """The machine-readable state of DESIGN.md (services arrive with the shop)."""
    rows = {r["name"]: r for r in _infra().status()}
    return {
        "runtime": "local",
        "gateway": None,
        "services": [],
        "infra": {
            name: {
                "address": row.get("address"),
                "source": row.get("source"),
                "healthy": row["healthy"],
            }
            for name, row in rows.items()
        },
    }


def up() -> int:
    runtime = resolve_runtime()
    print(f"runtime: {runtime}")
    return infra_up(as_json=False)


def down() -> int:
    resolve_runtime()
    return infra_down()


def status(as_json: bool) -> int:
    if as_json:
        state = platform_status_json()
        print(json.dumps(state, indent=2))
        return 0 if all(p["healthy"] for p in state["infra"].values()) else 1
    return infra_status(as_json=False)


def logs(name: str, follow: bool) -> int:
    records = _infra().records()
    rec = records.get(name)
    if rec is None or not rec.log:
        known = ", ".join(r for r, v in records.items() if v.log) or "none running"
        raise CommandError(f"no logs for {name!r} (known: {known})")
    path = Path(rec.log)
    if not follow:
        sys.stdout.write(path.read_text(errors="replace"))
        return 0
    os.execvp("tail", ["tail", "-n", "50", "-F", str(path)])
    return 0  # pragma: no cover - exec does not return


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the platform on RUNTIME (local|compose|k8s)")
    sub.add_parser("down", help="stop the platform and leave no process behind")
    p = sub.add_parser("status", help="show every part and its health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("logs", help="print the log of one part")
    p.add_argument("name", help="kafka, redis, consul, or a service")
    p.add_argument("-f", "--follow", action="store_true")

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
    if args.command == "infra":
        if args.infra_command == "up":
            return infra_up(args.json)
        if args.infra_command == "down":
            return infra_down()
        if args.infra_command == "status":
            return infra_status(args.json)
        return infra_topics()
    if args.command == "up":
        return up()
    if args.command == "down":
        return down()
    if args.command == "status":
        return status(args.json)
    return logs(args.name, args.follow)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except (CommandError, StartError, TimeoutError) as exc:
        print(f"meshctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meshctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
