"""``LocalRuntime``: the :class:`~infra.runtime.base.Runtime` of processes on loopback.

The embedded infra (``infra.embedded.Infra``, detached) plus one supervisor process
(``infra.local.supervisor``) that owns the gateway's and the services' replicas. Everything
here goes through the supervisor's control API or Consul; nothing keeps state in-process.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.embedded import Infra, mesh_home
from infra.local import promtext
from infra.local.catalog import DEFAULT_GATEWAY_PORT, Platform, load_platform, platform_path
from infra.local.client import ControlError, SupervisorClient, spawn_supervisor
from infra.local.files import HomeFiles, load_or_create_secrets, read_json
from infra.local.signals import group_lag
from infra.process import (
    ManagedProcess,
    StartError,
    pid_alive,
    port_in_use,
    terminate_group,
    wait_until,
)
from infra.runtime.base import Progress, Runtime, RuntimeFailure, quiet
from infra.runtime.models import (
    AutoscaleStatus,
    GatewayInfo,
    LimitsEnforcement,
    Overview,
    PlatformStatus,
    ReplicaInfo,
    RolloutSpec,
    RolloutStatus,
    ServiceStatus,
)

UP_TIMEOUT = 90.0
SUPERVISOR_START_TIMEOUT = 20.0
BROKEN = ("crashloop", "failed")


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self, home: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.home = home or mesh_home(self.environ)
        self.files = HomeFiles(self.home)
        self.client = SupervisorClient(self.files)

    # -- helpers -------------------------------------------------------------------------------
    def _infra(self, progress: Progress = quiet) -> Infra:
        return Infra(self.home, detached=True, environ=self.environ, progress=progress)

    def gateway_port(self) -> int:
        raw = self.environ.get("GATEWAY_PORT", "").strip() or str(DEFAULT_GATEWAY_PORT)
        try:
            port = int(raw)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise RuntimeFailure(f"GATEWAY_PORT={raw!r} is not a TCP port (1-65535)") from None
        return port

    def platform(self) -> Platform:
        return load_platform(platform_path(self.environ))

    def _snapshot(self) -> dict[str, Any]:
        return dict(self.client.call("GET", "/status"))

    # -- lifecycle -----------------------------------------------------------------------------
    def running(self) -> bool:
        return self.client.running()

    def up(self, progress: Progress = quiet, timeout: float = UP_TIMEOUT) -> PlatformStatus:
        if self.running():
            return self.status()
        platform = self.platform()
        port = self.gateway_port()
        if port_in_use(port):
            raise RuntimeFailure(
                f"gateway: port {port} on 127.0.0.1 is already in use (GATEWAY_PORT); "
                "free it or set GATEWAY_PORT to another port"
            )
        infra = self._infra(progress)
        started_infra = False
        supervisor: ManagedProcess | None = None
        try:
            if infra.running():
                progress("infrastructure already running")
            else:
                infra.up()
                started_infra = True
            load_or_create_secrets(self.files)
            supervisor = spawn_supervisor(self.files, port, self.environ)
            try:
                wait_until(
                    self.client.running,
                    timeout=SUPERVISOR_START_TIMEOUT,
                    what="supervisor",
                    alive=supervisor.alive,
                )
            except (StartError, TimeoutError) as exc:
                tail = supervisor.log_tail(2)
                raise RuntimeFailure(f"{exc}" + (f": {tail}" if tail else "")) from None
            progress(f"supervisor started (pid {supervisor.pid}); starting replicas")
            self._wait_platform(platform, progress, timeout, supervisor)
        except BaseException:
            # Ctrl-C or a failure: stop what this call started, and only that.
            if supervisor is not None:
                supervisor.stop(timeout=platform.runtime.shutdown_grace + 10)
            if started_infra:
                infra.down()
            raise
        return self.status()

    def _wait_platform(
        self, platform: Platform, progress: Progress, timeout: float, supervisor: ManagedProcess
    ) -> None:
        """Until every replica of every service passes in Consul; fail fast on a crash loop."""
        started = time.monotonic()
        reported: dict[str, int] = {}
        while True:
            if not supervisor.alive():
                raise RuntimeFailure(f"the supervisor exited: {supervisor.log_tail(2)}")
            snapshot = self._snapshot()
            replicas = [ReplicaInfo.model_validate(r) for r in snapshot["replicas"]]
            waiting = []
            for service in snapshot["services"]:
                name, wanted = service["name"], sum(service["desired"].values())
                ready = sum(1 for r in replicas if r.service == name and r.state == "ready")
                if reported.get(name) != ready:
                    reported[name] = ready
                    elapsed = time.monotonic() - started
                    progress(f"{name}: {ready}/{wanted} ready ({elapsed:.1f}s)")
                if ready < wanted:
                    waiting.append(name)
            broken = [r for r in replicas if r.state in BROKEN]
            if broken:
                r = broken[0]
                tail = _last_line(r.log)
                raise RuntimeFailure(
                    f"{r.service} {r.version} keeps crashing (exit {r.last_exit})"
                    + (f": {tail}" if tail else "")
                    + f" (log: {r.log})"
                )
            if not waiting:
                return
            if time.monotonic() - started > timeout:
                raise RuntimeFailure(
                    f"not healthy after {timeout:.0f}s: {', '.join(waiting)} "
                    f"(meshctl logs {waiting[0]})"
                )
            time.sleep(0.1)

    def down(self, progress: Progress = quiet) -> list[str]:
        stopped: list[str] = []
        pid = self.client.pid()
        state = read_json(self.files.runtime) or {}
        if pid is not None:
            count = len(state.get("replicas", []))
            progress(f"stopping the supervisor and {count} replicas (each one drains)")
            grace = self.platform().runtime.shutdown_grace if self.files.runtime.exists() else 10.0
            terminate_group(pid, timeout=grace + 15)
            stopped.append(f"supervisor ({count} replicas)")
        # Whatever a killed supervisor left behind (its children die with it, but check).
        leftovers = [p for p in state.get("pids", []) if isinstance(p, int) and pid_alive(p)]
        for leftover in leftovers:
            terminate_group(leftover, timeout=5)
        if leftovers:
            stopped.append(f"{len(leftovers)} leftover replica processes")
        self.files.supervisor.unlink(missing_ok=True)
        self.files.runtime.unlink(missing_ok=True)
        stopped += self._infra(progress).down()
        return stopped

    # -- state ---------------------------------------------------------------------------------
    def _gateway_info(self, snapshot: dict[str, Any], services: list[ServiceStatus]) -> GatewayInfo:
        gateway_service = next(s for s in services if s.kind == "gateway")
        secrets = read_json(self.files.secrets) or {}
        return GatewayInfo(
            url=snapshot["gateway"]["url"],
            api_key=str(secrets.get("api_key", "")),
            healthy=gateway_service.healthy > 0,
            name=gateway_service.name,
        )

    def overview(self) -> Overview:
        """Two calls to the supervisor (its snapshot and the autoscaler), no infra probes."""
        snapshot = self._snapshot()
        services = [ServiceStatus.model_validate(s) for s in snapshot["services"]]
        return Overview(
            runtime=self.name,
            gateway=self._gateway_info(snapshot, services),
            services=[s for s in services if s.kind != "gateway"],
            replicas=[ReplicaInfo.model_validate(r) for r in snapshot["replicas"]],
            rollouts={
                name: RolloutStatus.model_validate(r)
                for name, r in (snapshot.get("rollouts") or {}).items()
            },
            autoscale=AutoscaleStatus.model_validate(self.client.call("GET", "/autoscaler")),
        )

    def admin_token(self) -> str | None:
        secrets = read_json(self.files.secrets) or {}
        token = secrets.get("admin_token")
        return token if isinstance(token, str) and token else None

    def status(self) -> PlatformStatus:
        infra = {
            row["name"]: {
                "address": row.get("address"),
                "source": row.get("source"),
                "healthy": row["healthy"],
                **{k: row[k] for k in ("persistence", "data", "storage") if k in row},
            }
            for row in self._infra().status()
        }
        try:
            snapshot = self._snapshot()
        except ControlError:
            return PlatformStatus(runtime=self.name, gateway=None, services=[], infra=infra)
        services = [ServiceStatus.model_validate(s) for s in snapshot["services"]]
        limits = snapshot.get("limits")
        return PlatformStatus(
            runtime=self.name,
            gateway=self._gateway_info(snapshot, services),
            services=[s for s in services if s.kind != "gateway"],
            infra=infra,
            replicas=[ReplicaInfo.model_validate(r) for r in snapshot["replicas"]],
            limits=LimitsEnforcement.model_validate(limits) if limits else None,
        )

    def replicas(self, service: str | None = None) -> list[ReplicaInfo]:
        replicas = [ReplicaInfo.model_validate(r) for r in self._snapshot()["replicas"]]
        return [r for r in replicas if service is None or r.service == service]

    def consumer_lag(self, service: str) -> float | None:
        scrapes = []
        for replica in self.replicas(service):
            if replica.state != "ready":
                continue
            try:
                with urllib.request.urlopen(f"http://{replica.address}/metrics", timeout=2) as r:
                    scrapes.append(promtext.parse(r.read().decode()))
            except OSError:
                continue
        return group_lag(scrapes) if scrapes else None

    def consul_address(self) -> str:
        try:
            return self._infra().endpoints.consul_addr
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    # -- operations ----------------------------------------------------------------------------
    def stop_infra(self, part: str) -> None:
        try:
            self._infra().stop_part(part)
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    def start_infra(self, part: str, progress: Progress = quiet) -> None:
        try:
            self._infra(progress).start_part(part)
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    def crash_infra(self, part: str) -> None:
        try:
            self._infra().crash_part(part)
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    def set_redis_persistence(self, mode: str) -> None:
        try:
            self._infra().set_redis_persistence(mode)
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    def remove_volumes(self, progress: Progress = quiet) -> list[str]:
        if self._infra().records():
            raise RuntimeFailure("the infrastructure is still running: meshctl down first")
        removed = []
        for folder in self._infra().data_dirs():
            if folder.exists():
                shutil.rmtree(folder)
                progress(f"removed {folder}")
                removed.append(str(folder))
        return removed

    def scale(self, service: str, replicas: int) -> ServiceStatus:
        body = self.client.call("PUT", f"/services/{service}/replicas", {"replicas": replicas})
        return ServiceStatus.model_validate(body)

    def set_version_replicas(self, service: str, version: str, replicas: int) -> None:
        """Start or stop a replica set of any version (below the rollouts)."""
        self.client.call("PUT", f"/services/{service}/versions/{version}", {"replicas": replicas})

    def kill_replica(self, replica_id: str, signal: str = "KILL") -> ReplicaInfo:
        body = self.client.call("POST", f"/replicas/{replica_id}/kill", {"signal": signal})
        return ReplicaInfo.model_validate(body)

    def autoscale(self, enabled: bool | None = None) -> AutoscaleStatus:
        if enabled is None:
            body = self.client.call("GET", "/autoscaler")
        else:
            body = self.client.call("PUT", "/autoscaler", {"enabled": enabled})
        return AutoscaleStatus.model_validate(body)

    def rollout(self, spec: RolloutSpec) -> RolloutStatus:
        body = self.client.call("POST", "/rollouts", spec.model_dump())
        return RolloutStatus.model_validate(body)

    def rollout_status(self, service: str) -> RolloutStatus | None:
        try:
            body = self.client.call("GET", f"/rollouts/{service}")
        except ControlError as exc:
            if exc.code == "no_rollout":
                return None
            raise
        return RolloutStatus.model_validate(body)

    def rollout_abort(self, service: str) -> RolloutStatus:
        return RolloutStatus.model_validate(self.client.call("POST", f"/rollouts/{service}/abort"))

    def rollout_promote(self, service: str) -> RolloutStatus:
        body = self.client.call("POST", f"/rollouts/{service}/promote")
        return RolloutStatus.model_validate(body)


def _last_line(path: str | None) -> str:
    if not path:
        return ""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""
