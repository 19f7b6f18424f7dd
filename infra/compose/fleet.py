"""The replicas of a compose project: its containers (``docker inspect``), their checks in
Consul, what the gateway routes to, and their counts (``--scale`` of a version's compose
service). Below the rollouts, the autoscaler and the runtime, which all drive it; it knows
none of them (as the local runtime's fleet knows neither its rollouts nor its autoscaler).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from infra.compose.project import ComposeProject, Container, run
from infra.compose.store import RolloutStore
from infra.compose.versions import Versions
from infra.local.catalog import Platform
from infra.runtime.base import RuntimeFailure
from infra.runtime.kv import MeshKV

HTTP_TIMEOUT = 3.0
CONSUL_PORT = 8500
METRICS_SCRIPT = (
    "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
    "'http://127.0.0.1:{port}/metrics', timeout=3).read().decode())"
)
# Scaling down stops containers: each drains within stop_grace_period (30 s).
SCALE_TIMEOUT = 180.0


def get_json(url: str, headers: Mapping[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
        return json.loads(answer.read())


class ComposeFleet:
    def __init__(self, project: ComposeProject, platform: Platform) -> None:
        self.project = project
        self.platform = platform
        self.versions = Versions(project, platform)
        self.store = RolloutStore(project.state_dir)

    # -- containers -------------------------------------------------------------------------
    def containers_of(self, service: str) -> list[Container]:
        return [c for c in self.project.containers() if c.service == service]

    def version_containers(
        self, service: str, version: str, containers: list[Container] | None = None
    ) -> list[Container]:
        """The replicas of one version that exist (running, restarting or just created)."""
        if containers is None:
            containers = self.project.containers()
        return [c for c in containers if c.service == service and c.version == version and c.alive]

    def inspect(self, container_id: str) -> Container:
        done = run(["docker", "inspect", container_id], what="docker inspect")
        return Container.from_inspect(json.loads(done.stdout)[0])

    def metrics(self, c: Container) -> str | None:
        """The replica's /metrics: at its address when this machine routes to it (Linux),
        else read inside the container (Docker Desktop, a remote engine)."""
        try:
            with urllib.request.urlopen(f"http://{c.address}/metrics", timeout=2) as answer:
                return str(answer.read().decode())
        except (OSError, ValueError):
            pass
        done = run(
            ["docker", "exec", c.id, "python", "-c", METRICS_SCRIPT.format(port=c.port)],
            what="docker exec",
            timeout=20,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    # -- Consul -----------------------------------------------------------------------------
    def consul_address(self, containers: list[Container] | None = None) -> str:
        if containers is None:
            containers = self.project.containers()
        found = [c for c in containers if c.compose_service == "consul"]
        url = found[0].published(CONSUL_PORT) if found else None
        if url is None:
            raise RuntimeFailure(
                f"Consul of compose project {self.project.name} is not running or publishes "
                "no port (make up RUNTIME=compose)"
            )
        return url

    def consul_passing(self, containers: list[Container] | None = None) -> dict[str, bool] | None:
        """Address (ip:port) -> its Consul check passes; None when Consul does not answer."""
        try:
            consul = self.consul_address(containers)
            services = get_json(f"{consul}/v1/agent/services") or {}
            checks = get_json(f"{consul}/v1/agent/checks") or {}
        except (OSError, ValueError, RuntimeFailure):
            return None
        status = {c.get("ServiceID"): c.get("Status") for c in checks.values()}
        return {
            f"{s.get('Address')}:{s.get('Port')}": status.get(sid) == "passing"
            for sid, s in services.items()
        }

    def passing_addresses(
        self, service: str, version: str, containers: list[Container] | None = None
    ) -> set[str]:
        try:
            consul = self.consul_address(containers)
            nodes = get_json(f"{consul}/v1/health/service/{service}?passing")
        except (OSError, ValueError, RuntimeFailure):
            return set()
        return {
            f"{n['Service']['Address']}:{n['Service']['Port']}"
            for n in nodes or []
            if (n["Service"].get("Meta") or {}).get("version", "v1") == version
        }

    def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        MeshKV(self.consul_address()).set_weights(service, weights)

    # -- the gateway --------------------------------------------------------------------------
    def gateway_container(self, containers: list[Container] | None = None) -> Container:
        if containers is None:
            containers = self.project.containers()
        name = self.platform.gateway.name
        running = [c for c in containers if c.service == name and c.ports]
        if not running:
            raise RuntimeFailure(
                f"the gateway of compose project {self.project.name} is not running "
                "(make up RUNTIME=compose)"
            )
        return running[0]

    def gateway_url(self, containers: list[Container] | None = None) -> str:
        gateway = self.gateway_container(containers)
        url = gateway.published(gateway.port)
        if url is None:
            raise RuntimeFailure(f"{gateway.name} publishes no port")
        return url

    def api_key(self) -> str:
        return self.project.secrets().get("GATEWAY_API_KEYS", "").split(",")[0].strip()

    def gateway_routes(self, service: str, containers: list[Container] | None = None) -> set[str]:
        """Addresses the gateway routes ``service`` to now (it learns them from Consul)."""
        token = self.project.secrets().get("GATEWAY_ADMIN_TOKEN", "")
        try:
            pools = get_json(
                f"{self.gateway_url(containers)}/admin/instances",
                {"Authorization": f"Bearer {token}"},
            )
        except (OSError, ValueError, RuntimeFailure):
            return set()
        return {str(i["address"]) for i in pools.get(service, {}).get("instances", [])}

    def gateway_metrics(self) -> str:
        with urllib.request.urlopen(f"{self.gateway_url()}/metrics", timeout=HTTP_TIMEOUT) as r:
            return str(r.read().decode())

    def smoke(self, path: str, version: str) -> str | None:
        """One GET pinned to ``version`` through the gateway; None when it went well."""
        request = urllib.request.Request(
            self.gateway_url() + path,
            headers={"X-API-Key": self.api_key(), "X-Mesh-Version": version},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:
                status, served = answer.status, answer.headers.get("X-Mesh-Upstream-Version")
        except urllib.error.HTTPError as exc:
            status, served = exc.code, exc.headers.get("X-Mesh-Upstream-Version")
        except OSError as exc:
            return f"GET {path} failed: {exc!r}"
        if status >= 500:
            return f"GET {path} answered {status}"
        if served != version:
            return f"GET {path} was served by {served}, not {version}"
        return None

    # -- versions and counts ------------------------------------------------------------------
    def stable_version(self, service: str) -> str:
        entry = self.store.stable().get(service)
        return entry["version"] if entry else self.versions.base_version(service)

    def stable_compose_service(self, service: str) -> str:
        entry = self.store.stable().get(service)
        return entry["compose_service"] if entry else service

    def set_stable(self, service: str, version: str) -> None:
        self.store.set_stable(service, version, self.versions.compose_service(service, version))

    def scale_compose_service(self, compose_service: str, replicas: int) -> None:
        self.project.compose(
            "up",
            "-d",
            "--no-deps",
            "--no-recreate",
            "--no-build",
            "--scale",
            f"{compose_service}={replicas}",
            compose_service,
            what=f"compose up --scale {compose_service}={replicas}",
            timeout=SCALE_TIMEOUT,
        )

    def set_version_replicas(self, service: str, version: str, replicas: int) -> None:
        """Start or stop replicas of any version (below the rollouts and the autoscaler)."""
        if replicas > 0:
            compose_service = self.versions.ensure(service, version)
        else:
            compose_service = self.versions.compose_service(service, version)
            if (
                compose_service != service
                and not self.versions.override_path(service, version).exists()
            ):
                return  # never started: nothing to stop
        self.scale_compose_service(compose_service, replicas)

    def prune_versions(self, service: str) -> None:
        """Once a rollout ended: drop the override of every version of ``service`` that is
        neither stable nor running."""
        stable = self.stable_version(service)
        running = {c.version for c in self.containers_of(service) if c.alive}
        prefix = f"override-{service}-"
        for path in self.project.state_dir.glob(f"{prefix}v*.yml"):
            version = path.stem.removeprefix(prefix)
            if version != stable and version not in running:
                self.versions.remove(service, version)
