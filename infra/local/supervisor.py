"""The local runtime's supervisor: ``python -m infra.local.supervisor --home .mesh``.

``meshctl up`` starts it detached (its own session: it outlives the command). It owns every
replica as a child that dies with it, keeps them matching the desired counts (restarts with
backoff included), runs rollouts and the autoscaler, writes ``runtime.json``, and answers
``meshctl`` on its control API. SIGTERM stops every replica gracefully (each one drains),
services first and the gateway last, then the supervisor exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from infra.embedded import Infra, StartError, mesh_home
from infra.local.autoscaler import Autoscaler, FleetWorkloads
from infra.local.catalog import DEFAULT_GATEWAY_PORT, CatalogError, Platform, load_platform
from infra.local.control import build_control_app
from infra.local.environment import ReplicaEnvironment
from infra.local.files import HomeFiles, load_or_create_secrets, write_json
from infra.local.fleet import Fleet
from infra.local.limits import WATCH_EVERY, ResourceGuard
from infra.local.mesh import Mesh
from infra.local.rollout_target import FleetTarget
from infra.local.rollouts.manager import RolloutError, Rollouts
from infra.runtime.models import RolloutSpec, ServiceStatus
from infra.runtime.versions import VersionError, version_env, version_resources
from services.common.logging import setup_logging

log = logging.getLogger("infra.local.supervisor")

RECONCILE_EVERY = 0.1
HEALTH_EVERY = 0.25
STATE_EVERY = 0.25


class Supervisor:
    def __init__(self, home: Path, platform: Platform, gateway_port: int) -> None:
        self.files = HomeFiles(home)
        self.platform = platform
        endpoints = Infra(home).endpoints  # StartError when the infra is not running
        self.secrets = load_or_create_secrets(self.files)
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.mesh = Mesh(
            endpoints.consul_addr, self.gateway_url, self.secrets.admin_token, self.secrets.api_key
        )
        environment = ReplicaEnvironment(platform, self.files, endpoints.env(), self.secrets)
        self.guard = ResourceGuard(home, use_cgroups=platform.runtime.use_cgroups)
        self.fleet = Fleet(
            platform,
            environment,
            gateway_port=gateway_port,
            forget=self.mesh.forget,
            cwd=home,
            guard=self.guard,
        )
        self.rollouts = Rollouts(FleetTarget(platform, self.fleet, self.mesh), self._check_rollout)
        self.autoscaler = Autoscaler(
            platform,
            FleetWorkloads(self.fleet),
            busy=self.rollouts.active,
            scrape=self.mesh.scrape,
            log_path=self.files.autoscaler_log,
        )
        self.healthy: dict[str, int] = {}
        self.token = secrets.token_urlsafe(32)
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._written: tuple[int, int] | None = None

    # -- requests ------------------------------------------------------------------------------
    def _check_rollout(self, spec: RolloutSpec) -> None:
        try:
            service = self.platform.get(spec.service)
        except CatalogError as exc:
            raise RolloutError("unknown_service", str(exc), 404) from None
        if service.kind == "gateway":
            raise RolloutError(
                "not_supported", "the gateway is not rolled out on the local runtime (one port)"
            )
        try:
            version_env(self.platform.versions_dir, spec.service, spec.version)
            version_resources(self.platform.versions_dir, spec.service, spec.version)
        except (VersionError, OSError) as exc:
            raise RolloutError("bad_version", str(exc), 400) from None

    def scale(self, service: str, replicas: int) -> ServiceStatus:
        if self.rollouts.active(service):
            raise RolloutError(
                "rollout_in_progress",
                f"{service} has a rollout in progress: wait for it or abort it first",
            )
        self.fleet.set_desired(service, self.fleet.stable[service], replicas)
        return self.service_status(service)

    # -- state ---------------------------------------------------------------------------------
    def service_status(self, name: str) -> ServiceStatus:
        spec = self.platform.get(name)
        replicas = self.fleet.of(name)
        versions: dict[str, int] = {}
        for replica in replicas:
            versions[replica.version] = versions.get(replica.version, 0) + 1
        rollout = self.rollouts.get(name)
        return ServiceStatus(
            name=name,
            replicas=len(replicas),
            healthy=self.healthy.get(name, 0),
            versions=dict(sorted(versions.items())),
            desired=dict(self.fleet.desired.get(name, {})),
            stable=self.fleet.stable.get(name),
            kind=spec.kind,
            addresses=[f"127.0.0.1:{r.port}" for r in replicas],
            rollout=rollout.phase if rollout is not None and not rollout.finished else None,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "platform": str(self.platform.path),
            "gateway": {"url": self.gateway_url, "service": self.platform.gateway.name},
            "services": [self.service_status(s.name).model_dump() for s in self.platform.service],
            "replicas": [r.info().model_dump() for r in self.fleet.replicas],
            "pids": self.fleet.pids(),
            "rollouts": {k: v.model_dump() for k, v in self.rollouts.all().items()},
            "autoscaler": {"enabled": self.autoscaler.enabled},
            "limits": self.guard.enforcement.model_dump(),
        }

    # -- loops ---------------------------------------------------------------------------------
    async def _every(self, seconds: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
        failing = False
        while True:
            try:
                await step()
                if failing:
                    log.info("%s works again", what)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # say it once, not every tick
                    log.warning("%s failed: %r", what, exc)
                failing = True
            await asyncio.sleep(seconds)

    async def _reconcile(self) -> None:
        self.fleet.reconcile()

    async def _limits(self) -> None:
        self.guard.tick(self.fleet.replicas)

    async def _health(self) -> None:
        checks = await self.mesh.checks()
        self.fleet.observe(checks.passing)
        if checks.healthy != self.healthy:
            self.healthy = checks.healthy
            self.fleet.revision += 1

    def _write_state(self) -> None:
        write_json(self.files.runtime, self.snapshot())

    async def _state(self) -> None:
        mark = (self.fleet.revision, sum(len(s.events) for s in self.rollouts.all().values()))
        if mark != self._written:
            self._write_state()
            self._written = mark

    # -- life ----------------------------------------------------------------------------------
    async def run(self) -> int:
        await self.mesh.open()
        for spec in self.platform.service:
            # A fresh platform routes by instance: no weights left over from an earlier run.
            try:
                await self.mesh.set_weights(spec.name, None)
            except Exception as exc:  # Consul slow to answer: the gateway copes with stale ones
                log.warning("could not clear the weights of %s: %r", spec.name, exc)
            self.fleet.set_stable(spec.name, spec.version)
            self.fleet.set_desired(spec.name, spec.version, spec.replicas)
        runner = web.AppRunner(build_control_app(self, self.token), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._write_state()
        write_json(
            self.files.supervisor,
            {
                "pid": os.getpid(),
                "url": f"http://127.0.0.1:{port}",
                "token": self.token,
                "started_at": self.started_at,
            },
            mode=0o600,
        )
        log.info("supervisor ready", extra={"control_port": port, "gateway": self.gateway_url})
        loops = [
            asyncio.create_task(self._every(RECONCILE_EVERY, "reconcile", self._reconcile)),
            asyncio.create_task(self._every(HEALTH_EVERY, "consul health", self._health)),
            asyncio.create_task(self._every(STATE_EVERY, "state file", self._state)),
            asyncio.create_task(self.autoscaler.run()),
            asyncio.create_task(self._every(WATCH_EVERY, "resource limits", self._limits)),
        ]
        await self._stop.wait()
        log.info("stopping: draining every replica")
        await self.rollouts.stop()
        loops[0].cancel()  # no restarts while stopping
        loops[3].cancel()
        await self.fleet.stop_all()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self.guard.close()
        self._write_state()
        self.files.supervisor.unlink(missing_ok=True)
        await runner.cleanup()
        await self.mesh.close()
        log.info("stopped")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.supervisor", description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="state folder (.mesh)")
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=int(os.environ.get("GATEWAY_PORT") or DEFAULT_GATEWAY_PORT),
    )
    args = parser.parse_args(argv)
    home = (args.home or mesh_home()).resolve()
    setup_logging("supervisor", "v1", os.environ.get("MESH_SUPERVISOR_LOG_LEVEL", "INFO"))
    try:
        supervisor = Supervisor(home, load_platform(), args.gateway_port)
    except (CatalogError, StartError) as exc:
        print(f"supervisor: {exc}", file=sys.stderr, flush=True)
        return 2
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
