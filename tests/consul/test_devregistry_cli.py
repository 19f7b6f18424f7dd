"""The command-line contract the launcher depends on (development registry only).

``python -m infra.consul.devregistry --host 127.0.0.1 --port PORT`` serves until SIGTERM or
SIGINT, then exits 0 within 2 s, even with long polls in flight; it logs JSON lines to
stderr and refuses a non-loopback host unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.process import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
STOP_WITHIN = 2.0


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "infra.consul.devregistry", *args]


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


class Registry:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            _argv("--host", "127.0.0.1", "--port", str(self.port)),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def leader(self) -> str | None:
        try:
            response = requests.get(f"{self.url}/v1/status/leader", timeout=1)
        except requests.ConnectionError:
            return None
        return str(response.json()) if response.status_code == 200 else None

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float, str]:
        """Send ``signum``; answer the exit code, seconds it took, and stderr."""
        started = time.monotonic()
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=10)
        return self.process.returncode, time.monotonic() - started, stderr


@pytest.fixture
def registry() -> Iterator[Registry]:
    server = Registry()
    try:
        wait_until(
            server.leader,
            timeout=10,
            what="devregistry",
            alive=lambda: server.process.poll() is None,
        )
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_on_signal(registry: Registry, signum: int) -> None:
    assert registry.leader() == "127.0.0.1:8300"
    code, took, stderr = registry.stop(signum)
    assert code == 0
    assert took < STOP_WITHIN
    messages = [entry["msg"] for entry in _json_lines(stderr)]
    assert messages[0] == "started"
    assert messages[-1] == "stopped"


def test_stops_promptly_with_a_long_poll_in_flight(registry: Registry) -> None:
    index = requests.get(f"{registry.url}/v1/kv/k", timeout=5).headers["X-Consul-Index"]
    answers: list[int] = []

    def long_poll() -> None:
        try:
            url = f"{registry.url}/v1/kv/k?index={index}&wait=60s"
            answers.append(requests.get(url, timeout=30).status_code)
        except requests.RequestException:
            answers.append(-1)

    poller = threading.Thread(target=long_poll)
    poller.start()
    poller.join(0.3)
    assert poller.is_alive(), "the long poll should still be blocked"
    code, took, _ = registry.stop()
    poller.join(5)
    assert code == 0
    assert took < STOP_WITHIN
    assert answers == [404]  # released with its (unchanged) answer


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_refuses_non_loopback_host_without_allow_remote(host: str) -> None:
    done = subprocess.run(
        _argv("--host", host, "--port", str(free_port())),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2
    (entry,) = _json_lines(done.stderr)
    assert entry["level"] == "error"
    assert "--allow-remote" in entry["msg"]


def test_port_in_use_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _argv("--host", "127.0.0.1", "--port", str(port)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert done.returncode == 1
    assert _json_lines(done.stderr)[-1]["msg"] == "cannot serve"
