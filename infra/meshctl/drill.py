"""``meshctl drill NAME``: run a drill (Locust load + one operation) and write its report.

A lesson (``lesson-*``) runs its operation twice, the wrong way and the right way, and its
report puts the two side by side. Exit codes: 0 every SLO passed, 3 an SLO failed (the
report says which; for a lesson: the contrast it teaches was not measured), 1 the drill
could not run (one line on stderr).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from infra.embedded import mesh_home
from infra.embedded.persistence import REDIS_MODES
from infra.meshctl.output import CommandError
from infra.runtime import Runtime

SLO_FAILED = 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from infra.meshctl.rollout import duration

    p = sub.add_parser(
        "drill",
        help="rehearse an operation under load and write a report (meshctl drill list)",
        description="meshctl drill NAME [--runtime local|compose|k8s] [--duration 60s]",
    )
    p.add_argument(
        "name",
        help="autoscale, rolling, bluegreen, canary, canary-bad, kill-replica, "
        "broker-restart, redis-crash; the lessons lesson-probes, lesson-limits, "
        "lesson-fat-image (compose); or list",
    )
    p.add_argument("--runtime", choices=("local", "compose", "k8s"), help="default: RUNTIME")
    p.add_argument(
        "--duration",
        type=duration,
        help="seconds of load (each drill has a default; a lesson: of each of its two runs)",
    )
    p.add_argument("--service", default="orders", help="the service operated on (orders)")
    p.add_argument("--version", help="the version to roll out (default: v2, or v1 from v2)")
    p.add_argument("--out", type=Path, help="report folder (default .mesh/reports/<drill>-<time>)")
    p.add_argument(
        "--persistence",
        choices=REDIS_MODES,
        help="redis-crash: switch Redis to this persistence for the drill (and back after)",
    )


def list_drills() -> int:
    from loadtests.drills.catalog import DRILLS, LESSONS

    width = max(map(len, [*DRILLS, *LESSONS]))
    for name, drill in DRILLS.items():
        print(f"{name:{width}}  {drill.title} ({drill.default_duration:g}s)")
    for name, lesson in LESSONS.items():
        only = getattr(lesson, "runtimes", None)  # a lesson of some runtimes only
        mark = f"[lesson, {'/'.join(only)} only]" if only else "[lesson]"
        print(f"{name:{width}}  {mark} {lesson.title} (2 x {lesson.half_duration:g}s)")
    return 0


def run(runtime: Runtime, args: argparse.Namespace) -> int:
    from loadtests.drills.catalog import DRILLS, LESSONS
    from loadtests.drills.engine import DrillOptions, run_drill
    from loadtests.drills.lesson import run_lesson

    if args.name not in DRILLS and args.name not in LESSONS:
        known = ", ".join([*DRILLS, *LESSONS])
        raise CommandError(f"no drill {args.name!r}: choose one of {known}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = args.out or mesh_home() / "reports" / f"{args.name}-{stamp}"
    options = DrillOptions(
        duration=args.duration,
        service=args.service,
        version=args.version,
        out=folder,
        persistence=args.persistence,
        runtime=runtime.name,
    )
    if args.name in LESSONS:
        if args.service != "orders" or args.version:
            raise CommandError(
                f"{args.name} runs its own releases of orders: no --service/--version"
            )
        only = getattr(LESSONS[args.name], "runtimes", None)
        if only and runtime.name not in only:
            raise CommandError(
                f"{args.name} runs on the {'/'.join(only)} runtime only, not on {runtime.name}: "
                f"meshctl drill {args.name} --runtime {only[0]}"
            )
        lesson = run_lesson(LESSONS[args.name](options), runtime, folder)
        return 0 if lesson.passed else SLO_FAILED
    result = run_drill(DRILLS[args.name](options), runtime, folder)
    return 0 if result.passed else SLO_FAILED
