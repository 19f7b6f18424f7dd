"""Real processes for the gateway's tests: echo upstreams and gateways, on loopback."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from infra.process import ManagedProcess, free_port, wait_until

HERE = Path(__file__).resolve().parent
ECHO = HERE / "echo_upstream.py"
PUBLIC = {
    # 30 s: room for a request held at one instance while another starts (a loaded machine
    # takes seconds to start a process).
    "/api/orders": ("orders", "/orders", "30s", "safe", ["GET", "POST"]),
    "/api/stock": ("inventory", "/stock", "2s", "safe", ["GET"]),
    "/api/notifications/stream": ("notifications", "/notifications/stream", "0s", "never", ["GET"]),
}

# Fast discovery and health in tests: checks every 200 ms, reaped after a second critical.
FAST = {
    "CHECK_INTERVAL": "0.2",
    "CHECK_TIMEOUT": "0.5",
    "DEREGISTER_CRITICAL_AFTER": "1",
    "SHUTDOWN_GRACE_SECONDS": "5",
    "LOG_LEVEL": "WARNING",
}


def write_routes(path: Path) -> dict[str, str]:
    """A route table whose services have names of their own, so several test gateways and
    the shop's real services can share one Consul. Returns logical name -> service name."""
    tag = uuid.uuid4().hex[:8]
    names: dict[str, str] = {}
    lines = []
    for prefix, (logical, upstream, timeout, retry, methods) in PUBLIC.items():
        names[logical] = f"gw{tag}-{logical}"
        lines += [
            "[[route]]",
            f'prefix = "{prefix}"',
            f'service = "{names[logical]}"',
            f'upstream = "{upstream}"',
            f'timeout = "{timeout}"',
            f'retry = "{retry}"',
            f"methods = {json.dumps(methods)}",
            "",
        ]
    path.write_text("\n".join(lines))
    return names


def get_json(url: str, headers: dict[str, str] | None = None) -> object:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class Upstream:
    name: str
    version: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance_id(self) -> str:
        return f"{self.name}-127.0.0.1-{self.port}"

    def fail(self, status: int) -> None:
        body = json.dumps({"status": status}).encode()
        request = urllib.request.Request(
            self.url + "/control/fail",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()


@dataclass
class Fleet:
    """Starts echo upstreams and stops them all at the end of a test."""

    env: dict[str, str]
    logs: Path
    started: list[Upstream] = field(default_factory=list)

    def start(self, name: str, version: str = "v1", wait: bool = True) -> Upstream:
        port = free_port()
        env = {
            **self.env,
            **FAST,
            "SERVICE_NAME": name,
            "SERVICE_VERSION": version,
            "PORT": str(port),
        }
        process = ManagedProcess(
            f"{name}-{port}",
            [sys.executable, str(ECHO)],
            env=env,
            log_path=self.logs / f"{name}-{port}.log",
        )
        process.start()
        upstream = Upstream(name, version, port, process)
        self.started.append(upstream)
        if wait:
            wait_until(
                lambda: get_json(upstream.url + "/readyz"),
                timeout=20,
                what=f"{name} {version} ready",
                alive=process.alive,
            )
        return upstream

    def stop_all(self) -> None:
        for upstream in self.started:
            upstream.process.stop(timeout=5)
        self.started.clear()


@dataclass
class Gateway:
    url: str
    api_key: str
    admin_token: str
    services: dict[str, str]
    process: ManagedProcess

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def key_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def start_gateway(env: dict[str, str], home: Path, **overrides: str) -> Gateway:
    home.mkdir(parents=True, exist_ok=True)
    services = write_routes(home / "routes.toml")
    port = free_port()
    api_key, admin_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    full = {
        **env,
        **FAST,
        "GATEWAY_PORT": str(port),
        "GATEWAY_API_KEYS": api_key,
        "GATEWAY_ADMIN_TOKEN": admin_token,
        "GATEWAY_ROUTES_FILE": str(home / "routes.toml"),
        "GATEWAY_ACCESS_LOG": "false",
        # The module's gateway serves thousands of requests with one key; the rate limit has a
        # test (and a gateway) of its own.
        "GATEWAY_RATE_LIMIT_RPS": "100000",
        "GATEWAY_RATE_LIMIT_BURST": "100000",
        "MESH_TRACES_DIR": str(home / "traces"),
        **overrides,
    }
    process = ManagedProcess(
        "gateway", [sys.executable, "-m", "gateway"], env=full, log_path=home / "gateway.log"
    )
    process.start()
    gateway = Gateway(f"http://127.0.0.1:{port}", api_key, admin_token, services, process)
    wait_until(
        lambda: get_json(gateway.url + "/healthz"),
        timeout=20,
        what="gateway up",
        alive=process.alive,
    )
    return gateway
