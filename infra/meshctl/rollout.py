"""``meshctl rollout``: start a rollout and follow it, or show, abort, promote one.

The rollout itself runs in the runtime's controller (the supervisor on the local runtime), so
Ctrl-C here stops following, not the rollout; ``abort`` and ``promote`` work from any
terminal.
"""

from __future__ import annotations

import argparse
import sys
import time

from pydantic import TypeAdapter, ValidationError

from infra.meshctl.output import CommandError, progress
from infra.runtime import Runtime
from infra.runtime.models import RolloutSpec, RolloutStatus
from services.common.units import Duration

ACTIONS = ("status", "abort", "promote")
_DURATION: TypeAdapter[float] = TypeAdapter(Duration)


def duration(text: str) -> float:
    try:
        return _DURATION.validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 10s or 500ms") from None


def fraction(text: str) -> float:
    """``1%`` or ``0.01``."""
    raw = text.strip()
    try:
        value = float(raw.removesuffix("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate like 1% or 0.01")
    return value


def steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 10,25,50,100") from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rollout",
        help="roll out a version (rolling|bluegreen|canary); or status|abort|promote SERVICE",
        description="meshctl rollout SERVICE --version vN [--strategy ...]  |  "
        "meshctl rollout status|abort|promote SERVICE",
    )
    p.add_argument("words", nargs="+", metavar="SERVICE | ACTION SERVICE")
    p.add_argument("--version", help="the version to roll out, like v2")
    p.add_argument("--strategy", choices=("rolling", "bluegreen", "canary"), default="rolling")
    p.add_argument("--steps", type=steps, help="canary weights, like 10,25,50,100")
    p.add_argument("--interval", type=duration, help="canary analysis interval (10s)")
    p.add_argument("--max-error-rate", type=fraction, help="canary threshold (1%%)")
    p.add_argument("--max-p99", type=duration, help="canary threshold (500ms)")
    p.add_argument("--min-requests", type=int, help="fewer canary requests: inconclusive (10)")
    p.add_argument("--max-inconclusive", type=int, help="inconclusive analyses tolerated (3)")
    p.add_argument("--failure-limit", type=int, help="failed analyses tolerated (0)")
    p.add_argument("--keep-blue", type=duration, help="blue-green: keep blue this long (30s)")
    p.add_argument("--smoke-requests", type=int, help="blue-green: pinned GETs to green (3)")
    p.add_argument("--ready-timeout", type=duration, help="wait this long for replicas (60s)")
    p.add_argument("--no-wait", action="store_true", help="start it and return")


_OPTIONS = (
    "steps",
    "interval",
    "max_error_rate",
    "max_p99",
    "min_requests",
    "max_inconclusive",
    "failure_limit",
    "keep_blue",
    "smoke_requests",
    "ready_timeout",
)


def run(runtime: Runtime, args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if words[0] in ACTIONS:
        if len(words) != 2:
            raise CommandError(f"usage: meshctl rollout {words[0]} SERVICE")
        action, service = words
        if action == "status":
            state = runtime.rollout_status(service)
            if state is None:
                print(f"{service}: no rollout since the platform started")
                return 0
            print_status(state)
            return 0
        state = (
            runtime.rollout_abort(service)
            if action == "abort"
            else runtime.rollout_promote(service)
        )
        print(f"{service}: {action} requested ({state.strategy} {state.stable} -> {state.version})")
        return 0
    if len(words) != 1:
        raise CommandError("usage: meshctl rollout SERVICE --version vN [--strategy ...]")
    if not args.version:
        raise CommandError("--version is required, like --version v2")
    options = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    try:
        spec = RolloutSpec(
            service=words[0], version=args.version, strategy=args.strategy, **options
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise CommandError(
            message if message.startswith(field) else f"{field}: {message}"
        ) from None
    started = time.monotonic()
    runtime.rollout(spec)
    if args.no_wait:
        print(f"{spec.service}: {spec.strategy} rollout to {spec.version} started")
        return 0
    try:
        state = runtime.wait_rollout(spec.service, progress=progress)
    except KeyboardInterrupt:
        print(
            f"stopped following; the rollout goes on: meshctl rollout status|abort {spec.service}",
            file=sys.stderr,
        )
        return 130
    elapsed = time.monotonic() - started
    if state.phase == "completed":
        print(f"{spec.service}: rollout to {spec.version} completed in {elapsed:.1f}s")
        return 0
    if state.phase == "paused":
        print(f"{spec.service}: paused after the last step: meshctl rollout promote {spec.service}")
        return 0
    raise CommandError(
        f"rollout of {spec.service} {state.phase} after {elapsed:.1f}s: {state.message}"
    )


def print_status(state: RolloutStatus) -> None:
    weights = (
        " ".join(f"{v}={w}" for v, w in sorted(state.weights.items())) if state.weights else "none"
    )
    print(
        f"{state.service}: {state.strategy} {state.stable} -> {state.version}, {state.phase}"
        f" (weights {weights})"
    )
    if state.steps:
        print(f"  steps {','.join(map(str, state.steps))}%: at step {state.step + 1}")
    for analysis in state.analyses:
        print(f"  analysis at {analysis.weight}%: {analysis.verdict} ({analysis.reason})")
    for event in state.events[-8:]:
        clock = time.strftime("%H:%M:%S", time.localtime(event.at))
        print(f"  {clock} {event.message}")
