"""``python -m infra.consul.devregistry --host 127.0.0.1 --port 8500``: serve until SIGTERM.

Exit codes: 0 after a signal, 1 when the port cannot be bound, 2 for bad arguments (a
non-loopback host without ``--allow-remote`` included).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from . import logs
from .app import default_node, make_app

SHUTDOWN_TIMEOUT = 1.0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra.consul.devregistry",
        description="A development registry speaking a subset of Consul's HTTP API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=8500, help="port to bind (8500)")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host; the API has no authentication",
    )
    parser.add_argument("--node-name", default=None, help="node name (default: host name)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, not {args.port}")
    return args


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def _node_address(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if address.is_unspecified else host


async def _serve(args: argparse.Namespace) -> None:
    # Handlers first, so a signal that arrives while starting still means a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = default_node(_node_address(args.host), args.node_name)
    app = make_app(node=node)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # Free the handler of a long poll whose client went away.
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        logs.event("started", host=args.host, port=args.port, node=node.name)
        await stop.wait()
        logs.event("stopping")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logs.configure(args.log_level)
    if not args.allow_remote and not is_loopback(args.host):
        logs.event(
            "refusing to bind a non-loopback address without --allow-remote",
            level=logging.ERROR,
            host=args.host,
        )
        return 2
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        logs.event(
            "cannot serve", level=logging.ERROR, host=args.host, port=args.port, error=str(exc)
        )
        return 1
    logs.event("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
