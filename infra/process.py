"""Child processes that cannot be orphaned, free loopback ports, and polling with deadlines.

Every long-running part the platform starts (tansu, valkey/redis, the development registry,
service replicas) goes through :class:`ManagedProcess`, so there is one way to start a child,
send its output to a log file, and stop its whole process group.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import inspect
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A part could not start; the message is one line meant for the user."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The kernel sends SIGTERM to the child when the parent dies, even by SIGKILL, so a killed
    # test run or a crashed supervisor leaves no orphan behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _in_cgroup(cgroup: Path, die_with_parent: bool) -> Callable[[], None]:
    procs = str(cgroup / "cgroup.procs")

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        # "0" moves the writer itself: the service starts inside its limits, never outside.
        with open(procs, "w") as fh:
            fh.write("0")
        if die_with_parent:
            _die_with_parent()

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; raise ``TimeoutError`` naming ``what``.

    ``alive`` lets the caller stop early when the thing being waited on has died.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # the probe failing is the normal "not yet" case
            last_error = exc
        if alive is not None and not alive():
            raise StartError(f"{what}: the process exited before it answered")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what}: no answer within {timeout:.0f}s{detail}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def terminate_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if it outlives ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


class ManagedProcess:
    """One child process in its own process group, output appended to ``log_path``.

    ``detached=False`` (the default) ties the child's life to this process: if we die, the
    kernel terminates it. ``detached=True`` is for parts that must outlive the command that
    started them (``meshctl infra up``); they are stopped later by pid. ``cgroup``: a cgroup
    v2 folder the child starts in (its resource limits).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        detached: bool = False,
        cgroup: Path | None = None,
    ) -> None:
        self.name = name
        self.cgroup = cgroup
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.detached = detached
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.popen.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        preexec = None if self.detached else _die_with_parent
        if self.cgroup is not None:
            preexec = _in_cgroup(self.cgroup, die_with_parent=not self.detached)
        with open(self.log_path, "ab") as log:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            except FileNotFoundError as exc:
                raise StartError(f"{self.name}: binary not found: {self.argv[0]}") from exc
            except PermissionError as exc:
                raise StartError(f"{self.name}: binary not executable: {self.argv[0]}") from exc

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the whole process group gracefully, then by force; return the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            terminate_group(self.popen.pid, timeout)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL already sent
            return None


async def async_wait_until(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """The asyncio twin of :func:`wait_until`; ``probe`` may be a plain or async function."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except Exception as exc:  # "not yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"{what}: not true within {timeout:.1f}s{detail}")
        await asyncio.sleep(interval)
