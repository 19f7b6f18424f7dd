"""Talking to the supervisor from outside: start it, call its control API, stop it.

Synchronous on purpose: ``meshctl`` and the drills call it from plain code.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from infra.local.files import HomeFiles, read_json
from infra.process import ManagedProcess, pid_alive
from infra.runtime.base import RuntimeFailure

MODULE = "infra.local.supervisor"


class ControlError(RuntimeFailure):
    """The supervisor refused or could not be reached; the message is one line."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def is_supervisor(pid: int) -> bool:
    """``pid`` is alive and runs our supervisor (pids get reused)."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return MODULE.encode() in fh.read()
    except OSError:
        return False


class SupervisorClient:
    def __init__(self, files: HomeFiles, timeout: float = 10.0) -> None:
        self.files = files
        self.timeout = timeout

    def _info(self) -> dict[str, Any] | None:
        info = read_json(self.files.supervisor)
        return info if isinstance(info, dict) and "url" in info else None

    def pid(self) -> int | None:
        info = self._info()
        pid = info.get("pid") if info else None
        return pid if isinstance(pid, int) and is_supervisor(pid) else None

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            self.call("GET", "/status")
        except ControlError:
            return False
        return True

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        info = self._info()
        if info is None or not is_supervisor(int(info.get("pid", 0))):
            raise ControlError("the platform is not running (make up)")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            info["url"] + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {info['token']}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read())["error"]
                message, code = str(error["message"]), str(error["code"])
            except (ValueError, KeyError, TypeError):
                message, code = f"the supervisor answered {exc.code}", ""
            raise ControlError(message, exc.code, code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ControlError(f"the supervisor does not answer: {exc}") from None


def spawn_supervisor(
    files: HomeFiles, gateway_port: int, environ: Mapping[str, str] | None = None
) -> ManagedProcess:
    """Start the supervisor in a session of its own, so it outlives ``meshctl up``."""
    process = ManagedProcess(
        "supervisor",
        [
            sys.executable,
            "-m",
            MODULE,
            "--home",
            str(files.home),
            "--gateway-port",
            str(gateway_port),
        ],
        log_path=files.supervisor_log,
        env=dict(environ) if environ is not None else None,
        cwd=files.home,
        detached=True,
    )
    files.home.mkdir(parents=True, exist_ok=True)
    process.start()
    return process
