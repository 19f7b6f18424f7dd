"""``meshctl load``: Locust against the running platform (``make load`` calls it).

Headless (``--headless``: a summary at the end) or with Locust's web UI on 127.0.0.1. The
console's Load button starts the same command line (:mod:`loadtests.launch`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from infra.meshctl.output import CommandError
from infra.meshctl.rollout import duration
from infra.runtime import Runtime
from loadtests.launch import SHAPES, LoadError, LoadRequest, locust_command


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "load",
        help="Locust on the running platform: web UI on 127.0.0.1, or --headless",
        description="closed loop (each user waits for its answer) by default; --open for a "
        "constant arrival rate; --shape for a load that changes over time",
    )
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--rate", type=float, default=2.0, help="users started per second")
    p.add_argument("--duration", type=duration, help="headless run time (default 1m)")
    p.add_argument("--open", action="store_true", help="open loop: --arrivals per user")
    p.add_argument("--arrivals", type=float, help="arrivals per second per user (open loop)")
    p.add_argument("--shape", choices=SHAPES, help="a load shape (loadtests/shapes.py)")
    p.add_argument("--headless", action="store_true", help="no web UI; end with a summary")
    p.add_argument("--web-port", type=int, default=int(os.environ.get("LOCUST_PORT") or 8089))


def run(runtime: Runtime, args: argparse.Namespace) -> int:
    gateway = runtime.gateway()
    if gateway is None or not gateway.url or not gateway.api_key:
        raise CommandError("the platform is not running (make up first)")
    request = LoadRequest(
        mode="open" if args.open or args.arrivals else "closed",
        users=args.users,
        spawn_rate=args.rate,
        arrivals=args.arrivals,
        shape=args.shape,
        duration=args.duration or (60.0 if args.headless else None),
        headless=args.headless,
        web_port=args.web_port,
    )
    try:
        argv, env = locust_command(request, gateway.url, gateway.api_key)
    except LoadError as exc:
        raise CommandError(str(exc)) from None
    print(f"load on {gateway.url}: {request.describe()}", file=sys.stderr)
    if not args.headless:
        print(
            f"Locust web UI: http://127.0.0.1:{request.web_port}  (Ctrl-C stops)", file=sys.stderr
        )
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130
