"""``python -m infra.console --home .mesh --runtime local --port 8090``: the console process.

``meshctl console`` (and ``meshctl up`` on the local runtime) start it detached; it writes
``<home>/console.json`` (pid, url) once it listens and removes it when it stops (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from infra.console.collector import Collector
from infra.console.files import console_file
from infra.console.operations import Operations
from infra.console.server import build_app
from infra.local.files import write_json
from infra.runtime import get_runtime
from services.common.logging import setup_logging

log = logging.getLogger("infra.console")


def drill_catalog() -> list[dict[str, object]]:
    from loadtests.drills.catalog import DRILLS, LESSONS

    drills = [
        {"name": n, "title": d.title, "default_duration": d.default_duration, "lesson": False}
        for n, d in DRILLS.items()
    ]
    return drills + [
        {"name": n, "title": lesson.title, "lesson": True} for n, lesson in LESSONS.items()
    ]


async def serve(home: Path, runtime_name: str, port: int, jaeger: str | None) -> int:
    runtime = get_runtime(runtime_name, home)
    collector = Collector(runtime, home, jaeger_url=jaeger)
    operations = Operations(runtime, home)
    catalog = drill_catalog()
    collector.extras = {
        "load": operations.load.state,
        "drill": operations.drill.state,
        "drills": lambda: {"reports": operations.drill.listed(), "catalog": catalog},
    }
    await collector.open()
    app = build_app(collector, operations, runtime.admin_token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    url = f"http://127.0.0.1:{bound}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticking = asyncio.create_task(collector.run(), name="console-collector")
    await collector.tick()  # the first frame before anyone is told where to look
    write_json(
        console_file(home),
        {"pid": os.getpid(), "url": url, "runtime": runtime.name, "started_at": time.time()},
    )
    log.info("console ready", extra={"url": url, "runtime": runtime.name})
    print(f"console {url}", flush=True)
    await stop.wait()
    log.info("console stopping")
    console_file(home).unlink(missing_ok=True)
    await collector.close()
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    await asyncio.to_thread(operations.close)
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.console", description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--runtime", default="local", choices=("local", "compose", "k8s"))
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--jaeger", default=None, help="Jaeger query URL (compose, k8s)")
    args = parser.parse_args(argv)
    setup_logging("console", "v1", os.environ.get("MESH_CONSOLE_LOG_LEVEL", "INFO"))
    try:
        return asyncio.run(serve(args.home.resolve(), args.runtime, args.port, args.jaeger))
    except OSError as exc:
        print(f"console: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
