"""Starting, finding and stopping the console process (for ``meshctl``).

The console runs detached, like the local supervisor: ``<home>/console.json`` says where
(pid, url) while it runs; its log is ``<home>/logs/console.log``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from infra.process import (
    ManagedProcess,
    StartError,
    pid_alive,
    port_in_use,
    terminate_group,
    wait_until,
)

CONSOLE_FILE = "console.json"
DEFAULT_PORT = 8090
START_TIMEOUT = 20.0


def console_file(home: Path) -> Path:
    return home / CONSOLE_FILE


def console_url(home: Path) -> str | None:
    """The URL of the console of ``home`` while its process lives, else None."""
    try:
        data = json.loads(console_file(home).read_text())
    except (OSError, ValueError):
        return None
    pid, url = data.get("pid"), data.get("url")
    if not isinstance(pid, int) or not isinstance(url, str) or not pid_alive(pid):
        return None
    return url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def pick_port(environ: Mapping[str, str], wanted: int | None) -> int:
    """``--port``, else ``MESH_CONSOLE_PORT``, else 8090 (or any free port when 8090 is
    taken and nobody asked for it). A port asked for and taken is refused in one line."""
    raw = str(wanted) if wanted is not None else environ.get("MESH_CONSOLE_PORT", "").strip()
    if raw:
        try:
            port = int(raw)
            if not 0 <= port < 65536:
                raise ValueError
        except ValueError:
            raise StartError(f"console port {raw!r} is not a TCP port (0-65535)") from None
        if port and port_in_use(port):
            raise StartError(
                f"console: port {port} on 127.0.0.1 is already in use "
                "(--port or MESH_CONSOLE_PORT; 0 picks a free one)"
            )
        return port
    return 0 if port_in_use(DEFAULT_PORT) else DEFAULT_PORT


def start_console(
    home: Path,
    runtime: str,
    *,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
    jaeger: str | None = None,
) -> str:
    """Start the console for ``runtime`` (once: a running one is reused); return its URL."""
    running = console_url(home)
    if running is not None:
        return running
    env = dict(os.environ if environ is None else environ)
    argv = [sys.executable, "-m", "infra.console", "--home", str(home), "--runtime", runtime]
    argv += ["--port", str(pick_port(env, port))]
    if jaeger:
        argv += ["--jaeger", jaeger]
    console_file(home).unlink(missing_ok=True)
    process = ManagedProcess(
        "console", argv, log_path=home / "logs" / "console.log", env=env, cwd=home, detached=True
    )
    home.mkdir(parents=True, exist_ok=True)
    process.start()
    try:
        url = wait_until(
            lambda: (u := console_url(home)) and _answers(u) and u,
            timeout=START_TIMEOUT,
            what="console",
            alive=process.alive,
            interval=0.1,
        )
    except (StartError, TimeoutError) as exc:
        tail = process.log_tail(2)
        process.stop(timeout=5)
        raise StartError(f"{exc}" + (f": {tail}" if tail else "")) from None
    return str(url)


def stop_console(home: Path, timeout: float = 10.0) -> bool:
    """Stop the console of ``home`` if one runs; True when one was stopped."""
    try:
        data = json.loads(console_file(home).read_text())
    except (OSError, ValueError):
        return False
    pid = data.get("pid")
    stopped = False
    if isinstance(pid, int) and pid_alive(pid):
        terminate_group(pid, timeout=timeout)
        stopped = True
    console_file(home).unlink(missing_ok=True)
    return stopped
