"""Helpers of the local runtime's tests: a catalogue of test services under names of their
own, ``meshctl`` as a user runs it, and a load that counts every failed request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.runtime import LocalRuntime
from infra.process import free_port, pid_alive, wait_until

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_service.py"
MESHCTL = [sys.executable, "-m", "infra.meshctl"]
OWN_VARS = ("MESH_HOME", "MESH_PLATFORM_FILE", "GATEWAY_PORT", "RUNTIME")

# Fast checks and drains, so replicas come and go within a second.
RUNTIME_SECTION = """
[runtime]
check_interval = "200ms"
check_timeout = "500ms"
deregister_critical_after = "2s"
shutdown_grace = "5s"
versions_dir = "versions"
restart_backoff = "200ms"
restart_backoff_max = "1s"
crashloop_after = 2
max_restarts = 3
stable_after = "5s"
ready_timeout = "30s"
# The tests of the supervisor's RSS watch need it on any machine, cgroup v2 or not.
use_cgroups = false
"""

FAST_AUTOSCALE = """
[service.autoscale]
min = 1
max = 3
sync_period = "500ms"
sample_interval = "100ms"
metrics = [{ type = "in_flight", target = 2 }]
scale_up = { stabilization = "0s", policies = [{ type = "pods", value = 4, period = "2s" }] }
scale_down = { stabilization = "3s", policies = [{ type = "pods", value = 1, period = "1s" }] }
"""


@dataclass
class LocalPlatform:
    home: Path
    env: dict[str, str]
    tag: str
    gateway_port: int

    @property
    def web(self) -> str:
        return f"t{self.tag}-web"

    @property
    def gateway_name(self) -> str:
        return f"t{self.tag}-gw"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def runtime(self) -> LocalRuntime:
        return LocalRuntime(self.home, self.env)

    @property
    def api_key(self) -> str:
        return str(json.loads((self.home / "secrets.json").read_text())["api_key"])

    def meshctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MESHCTL, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def recorded_pids(self) -> list[int]:
        pids = []
        supervisor = self.home / "supervisor.json"
        if supervisor.exists():
            pids.append(json.loads(supervisor.read_text())["pid"])
        state = self.home / "runtime.json"
        if state.exists():
            data = json.loads(state.read_text())
            pids += [data["pid"], *data["pids"]]
        return pids

    def stop(self) -> None:
        pids = self.recorded_pids()
        self.meshctl("down")
        wait_until(
            lambda: not any(pid_alive(p) for p in pids), timeout=20, what="every process gone"
        )


PlatformFactory = Callable[..., LocalPlatform]


def make_platform(
    home: Path, infra_env: Mapping[str, str], *, replicas: int = 1, autoscale: bool = False
) -> LocalPlatform:
    """Write a catalogue (a gateway and one ``web`` service), routes and version files."""
    tag = uuid.uuid4().hex[:8]
    home.mkdir(parents=True, exist_ok=True)
    platform = LocalPlatform(home, {}, tag, free_port())
    routes = home / "routes.toml"
    routes.write_text(
        f'[[route]]\nprefix = "/api/web"\nservice = "{platform.web}"\nupstream = "/web"\n'
        'timeout = "3s"\nretry = "safe"\nmethods = ["GET", "POST"]\n'
    )
    versions = home / "versions"
    versions.mkdir(exist_ok=True)
    (versions / f"{platform.web}-v3.env").write_text("# a faulty version\nFAKE_ERROR_RATE=0.3\n")
    (versions / f"{platform.web}-v9.env").write_text("FAKE_CRASH=1\n")
    (versions / f"{platform.web}-v8.env").write_text("FAKE_STARTUP_DELAY=60\n")
    quiet = '{ LOG_LEVEL = "WARNING", OTEL_SDK_DISABLED = "true" }'
    catalogue = RUNTIME_SECTION + (
        f'\n[[service]]\nname = "{platform.gateway_name}"\nkind = "gateway"\nmodule = "gateway"\n'
        f'env = {{ GATEWAY_ROUTES_FILE = "{routes}", GATEWAY_ACCESS_LOG = "false", '
        'GATEWAY_RATE_LIMIT_RPS = "0", LOG_LEVEL = "WARNING", OTEL_SDK_DISABLED = "true" }\n'
        f'\n[[service]]\nname = "{platform.web}"\nargv = ["{{python}}", "{FAKE}"]\n'
        f'replicas = {replicas}\nsmoke_path = "/api/web/smoke"\nenv = {quiet}\n'
    )
    if autoscale:
        catalogue += FAST_AUTOSCALE
    (home / "platform.toml").write_text(catalogue)
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARS}
    env.update(
        infra_env,
        MESH_HOME=str(home),
        MESH_PLATFORM_FILE=str(home / "platform.toml"),
        GATEWAY_PORT=str(platform.gateway_port),
        RUNTIME="local",
        # These tests are about the supervisor: no console beside it (tests/console has one).
        MESH_CONSOLE="off",
    )
    platform.env = env
    return platform


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("meshctl: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@dataclass
class Load:
    """Threads sending GETs through the gateway until stopped; every answer is recorded."""

    url: str
    api_key: str
    threads: int = 4
    query: str = ""
    results: list[tuple[float, int, str]] = field(default_factory=list)  # (t, status, version)
    # (sent, answered, version): routing order is the order requests were sent in, which
    # concurrent threads do not keep in their answers.
    timings: list[tuple[float, float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(
                f"{self.url}/api/web/ping{self.query}", headers={"X-API-Key": self.api_key}
            )
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, version = response.status, response.headers["X-Mesh-Upstream-Version"]
            except urllib.error.HTTPError as exc:
                status, version = exc.code, exc.headers.get("X-Mesh-Upstream-Version", "")
            except OSError as exc:
                with self._lock:
                    self.errors.append(repr(exc))
                continue
            answered = time.monotonic()
            with self._lock:
                self.results.append((answered, status, version or ""))
                self.timings.append((sent, answered, version or ""))

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    @property
    def failures(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]

    def count(self) -> int:
        with self._lock:
            return len(self.results)
