"""Helpers of the compose tests: the compose files, the docker/docker-compose CLIs, and a
small HTTP client for the gateway (standard library only, so a test thread never shares an
event loop)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

# The compose files, labels, CLI choice and env files are the adapter's (one definition each).
from infra.compose import engine
from infra.compose.envfiles import ensure_env_files
from infra.compose.project import PROJECT_LABEL, REPO_ROOT, SERVICE_LABEL, succeeds
from infra.runtime.base import RuntimeFailure

ROOT = REPO_ROOT


def compose_cli() -> list[str] | None:
    """The Compose CLI meshctl would use here (v2 first), or None when there is none."""
    try:
        return list(engine.compose_cli().argv)
    except RuntimeFailure:
        return None


T = TypeVar("T")


def docker_cli() -> str | None:
    return shutil.which("docker")


def engine_answers() -> bool:
    docker = docker_cli()
    return docker is not None and succeeds(
        [docker, "info", "--format", "{{.ServerVersion}}"], timeout=20
    )


def write_env_files(directory: Path) -> dict[str, str]:
    """Generate the secret env files into ``directory`` (never the developer's .mesh/)."""
    ensure_env_files(directory, directory)
    values: dict[str, str] = {}
    for name in ("gateway.env", "services.env", "grafana.env"):
        for line in (directory / name).read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # remembered for the message, then polled again
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class ComposeProject:
    """One compose project (``-p name``) over the given files and environment."""

    name: str
    files: Sequence[Path]
    env: Mapping[str, str]
    cli: list[str] = field(default_factory=lambda: compose_cli() or ["docker-compose"])

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.cli, "-p", self.name]
        for path in self.files:
            argv += ["-f", str(path)]
        done = subprocess.run(
            [*argv, *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:3])} failed ({done.returncode}): {_tail(done.stderr)}"
            )
        return done

    def container_ids(self, service: str | None = None) -> list[str]:
        argv = ["ps", "-aq", "--filter", f"label={PROJECT_LABEL}={self.name}"]
        if service:
            argv += ["--filter", f"label={SERVICE_LABEL}={service}"]
        return docker(*argv).split()

    def inspect(self, service: str | None = None) -> list[dict[str, Any]]:
        ids = self.container_ids(service)
        if not ids:
            return []
        return list(json.loads(docker("inspect", *ids)))

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label={PROJECT_LABEL}={self.name}"
        found = {
            "containers": docker("ps", "-aq", "--filter", label).split(),
            "networks": docker("network", "ls", "-q", "--filter", label).split(),
            "volumes": docker("volume", "ls", "-q", "--filter", label).split(),
        }
        return {kind: items for kind, items in found.items() if items}


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed: {_tail(done.stderr)}")
    return done.stdout


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def container_name(info: Mapping[str, Any]) -> str:
    return str(info["Name"]).lstrip("/")


def health_of(info: Mapping[str, Any]) -> str:
    """``healthy``/``unhealthy``/``starting``, ``exited(N)`` or ``no-healthcheck``."""
    state = info["State"]
    if not state.get("Running"):
        return f"exited({state.get('ExitCode')})"
    health = state.get("Health")
    return str(health["Status"]) if health else "no-healthcheck"


# -- the public API through the gateway ---------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]


class Gateway:
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={
                **({"X-API-Key": self.api_key} if self.api_key else {}),
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return Answer(answer.status, _json(answer.read()), dict(answer.headers))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, _json(exc.read()), dict(exc.headers))

    def place_order(self, customer: str, sku: str = "SKU-001", quantity: int = 1) -> Answer:
        return self.request(
            "POST",
            "/api/orders",
            {"customer_id": customer, "items": [{"sku": sku, "quantity": quantity}]},
            headers={"Idempotency-Key": f"{customer}-{time.monotonic_ns()}"},
        )

    def order(self, order_id: str) -> Answer:
        return self.request("GET", f"/api/orders/{order_id}")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` / ``$$`` interpolation, for static checks."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default if default is not None else "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?]([^}]*))?\}", replace, value)


@dataclass
class Traffic:
    """Clients that place an order and read it back until told to stop, optionally pausing
    between rounds (under a busy engine a client that never pauses keeps orders' CPU busy and
    its Consul check late)."""

    gateway: Gateway
    clients: int = 3
    pause: float = 0.0
    prefix: str = "c-drill"
    sent: int = 0
    order_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # POSTs answered per version
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, number: int) -> None:
        iteration = 0
        while not self._stop.wait(self.pause):
            iteration += 1
            order_id, failure, version = None, None, None
            try:
                placed = self.gateway.place_order(f"{self.prefix}-{number}-{iteration}")
                version = placed.headers.get("X-Mesh-Upstream-Version")
                if placed.status != 202:
                    failure = f"POST {placed.status} {placed.body}"
                else:
                    order_id = placed.body["id"]
                    read = self.gateway.order(order_id)
                    if read.status != 200:
                        failure = f"GET {read.status} {read.body}"
            except Exception as exc:  # a refused or reset connection is a failed request too
                failure = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.sent += 2
                if version:
                    self.served[version] = self.served.get(version, 0) + 1
                if order_id:
                    self.order_ids.append(order_id)
                if failure:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} client {number}: {failure}")

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return self.sent
