"""``ComposeRuntime``: the :class:`~infra.runtime.base.Runtime` of ``docker-compose.yml``.

- ``up``/``down`` are :mod:`infra.compose.stack` (``make up|down RUNTIME=compose``); the
  project and its files are what ``up`` recorded in ``.mesh/compose/state.env``.
- State comes from ``docker inspect`` of the project's containers (compose labels) and from
  Consul (each replica's check), which the stack publishes on 127.0.0.1 with the gateway. A
  replica is a container: its id is the container name, its version ``SERVICE_VERSION``.
- ``scale`` is ``compose up -d --no-deps --no-recreate --scale S=N S`` (:mod:`infra.compose.fleet`).
- ``kill_replica`` is ``docker kill``, then ``docker start``: Docker counts a kill as a manual
  stop, so ``restart: unless-stopped`` does not bring the container back by itself.
- ``crash_infra`` is ``compose kill -s KILL`` (it stays down: a manual stop, as above),
  ``start_infra`` is ``compose start``: the same container, so the same name on the project
  network, the same command and the same volume. Redis's persistence is the file of
  infra/redis/ its container mounts (``MESH_REDIS_PERSISTENCE``, recorded in state.env);
  switching it recreates the container (:meth:`ComposeRuntime.set_redis_persistence`).
- Rollouts run the shared strategies in this process (:mod:`infra.compose.rollouts`); a
  version other than the compose file's runs as ``<service>-<version>`` from a generated
  override (:mod:`infra.compose.versions`).
- The autoscaler is the local runtime's, in a process of its own
  (:mod:`infra.compose.autoscaler`).

The modules depend one way: project <- versions, store <- fleet <- target <- rollouts <-
runtime, as the local runtime's fleet knows nothing of the rollouts that drive it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.compose.autoscaler import AutoscalerProcess
from infra.compose.fleet import ComposeFleet
from infra.compose.persistence import (
    WITHOUT_VOLUME,
    anonymous_data_volume,
    redis_aof_now,
    redis_keeps,
)
from infra.compose.project import (
    INFRA_OVERRIDE,
    REDIS_PERSISTENCE_VAR,
    TEST_OVERRIDE,
    ComposeProject,
    Container,
    docker,
    last_line,
)
from infra.compose.rollouts import ComposeRollouts
from infra.compose.stack import ComposeStack
from infra.compose.target import ComposeTarget
from infra.compose.usage import OomCounter, container_rss
from infra.embedded import mesh_home
from infra.embedded.persistence import redis_mode
from infra.local import promtext
from infra.local.catalog import CatalogError, Platform, load_platform, platform_path
from infra.local.signals import group_lag
from infra.process import StartError
from infra.runtime.base import PartialStart, Progress, Runtime, RuntimeFailure, quiet
from infra.runtime.models import (
    AutoscaleStatus,
    GatewayInfo,
    PlatformStatus,
    ReplicaInfo,
    RolloutSpec,
    RolloutStatus,
    ServiceStatus,
)

INFRA_PORTS = {"kafka": 9092, "redis": 6379, "consul": 8500}
INFRA_WAIT = 120.0
# A replica whose Docker healthcheck passes but whose Consul check still fails this long
# after its start is unhealthy (its /readyz says a dependency is down), not starting.
STARTING_GRACE = 30.0


class ComposeRuntime(Runtime):
    name = "compose"

    def __init__(
        self,
        home: Path | None = None,
        environ: Mapping[str, str] | None = None,
        project: ComposeProject | None = None,
    ) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        # Not ``home``: ``meshctl status`` prints the embedded infra of a runtime that has one.
        self.mesh_home = home or mesh_home(self.environ)
        self.platform: Platform = load_platform(platform_path(self.environ))
        self._from_state = project is None
        self._bind(project or ComposeProject.from_state(self.mesh_home, self.environ))

    def _bind(self, project: ComposeProject) -> None:
        self.project = project
        self.fleet = ComposeFleet(project, self.platform)
        self.versions = self.fleet.versions
        self.store = self.fleet.store
        self.target = ComposeTarget(self.fleet)
        self.rollouts = ComposeRollouts(
            self.target, self._check_rollout, self.store, self.fleet.prune_versions
        )
        self.autoscaler = AutoscalerProcess(project, self.mesh_home, self.platform)
        self._anonymous: set[str] = set()  # Redis's anonymous volumes, to remove after use
        self._oom = OomCounter()

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: Progress = quiet) -> PlatformStatus:
        if self.running():
            return self.status()
        stack = ComposeStack(self.mesh_home, self.environ, self.platform)
        try:
            result = stack.up(progress)
        except KeyboardInterrupt:
            # As on the local runtime, Ctrl-C stops what this call started. A failure leaves
            # the containers for `meshctl logs` (the failure names the container).
            stack.down(quiet)
            raise
        if self._from_state:  # up may have chosen other files (the local stand-ins)
            self._bind(ComposeProject.from_state(self.mesh_home, self.environ))
        for name, url in result.urls:
            progress(f"{name:<11} {url}")
        status = self.status()
        if result.shortfall:
            raise PartialStart(result.shortfall, status)
        return status

    def down(self, progress: Progress = quiet) -> list[str]:
        stopped = []
        if self.autoscaler.stop():
            stopped.append("the autoscaler")
        volumes = self.environ.get("MESH_COMPOSE_DOWN_VOLUMES", "") == "1"
        stack = ComposeStack(self.mesh_home, self.environ, self.platform)
        count = stack.down(progress, volumes=volumes)
        # The versions, stable markers and rollouts of that run are gone with its containers.
        if self.project.state_dir.is_dir():
            for path in self.project.state_dir.iterdir():
                if path.is_file() and path.name not in ("autoscaler.jsonl", "autoscaler.log"):
                    path.unlink(missing_ok=True)
        if count:
            stopped.append(f"compose project {self.project.name} ({count} containers)")
        return stopped

    def remove_volumes(self, progress: Progress = quiet) -> list[str]:
        """``meshctl down --volumes``: the project's named volumes (Redis's data) too, as
        ``docker compose down -v`` (what ``make clean`` runs)."""
        ComposeStack(self.mesh_home, self.environ, self.platform).down(progress, volumes=True)
        return [f"the volumes of compose project {self.project.name}"]

    def running(self) -> bool:
        try:
            gateway = self._containers_of(self.platform.gateway.name)
        except RuntimeFailure:
            return False
        return any(c.status == "running" for c in gateway)

    # -- reading the containers and Consul -----------------------------------------------------
    def _containers_of(self, service: str) -> list[Container]:
        return self.fleet.containers_of(service)

    def show_logs(self, name: str, follow: bool) -> int:
        """The logs of a service (every version's containers) or of an infra part."""
        known = sorted({c.compose_service for c in self.project.containers()})
        wanted = sorted({c.compose_service for c in self._containers_of(name)})
        if not wanted and name in known:
            wanted = [name]  # kafka, redis, consul... have no service label of ours
        if not wanted:
            raise RuntimeFailure(f"no logs for {name!r} (known: {', '.join(known) or 'none'})")
        return self.project.show_logs(wanted, follow)

    def gateway_url(self, containers: list[Container] | None = None) -> str:
        return self.fleet.gateway_url(containers)

    def gateway_routes(self, service: str) -> set[str]:
        return self.fleet.gateway_routes(service)

    # -- state ---------------------------------------------------------------------------------
    def _service_names(self, containers: list[Container]) -> list[str]:
        """The catalogue's services (they are docker-compose.yml's), then any other found."""
        names = [s.name for s in self.platform.service]
        names += sorted({c.service for c in containers if c.service} - set(names))
        return names

    def status(self) -> PlatformStatus:
        containers = self.project.containers()
        replicas = self._alive_replicas(containers=containers)
        services = [self._service_status(n, replicas) for n in self._service_names(containers)]
        gateway_name = self.platform.gateway.name
        gateway = None
        gateway_status = next(s for s in services if s.name == gateway_name)
        if gateway_status.replicas:
            try:
                gateway = GatewayInfo(
                    url=self.gateway_url(containers),
                    api_key=self.fleet.api_key(),
                    healthy=gateway_status.healthy > 0,
                    name=gateway_name,
                )
            except RuntimeFailure:
                gateway = None
        return PlatformStatus(
            runtime=self.name,
            gateway=gateway,
            services=[s for s in services if s.name != gateway_name],
            infra=self._infra(containers),
        )

    def _service_status(self, name: str, replicas: list[ReplicaInfo]) -> ServiceStatus:
        mine = [r for r in replicas if r.service == name]
        versions: dict[str, int] = {}
        for r in mine:
            versions[r.version] = versions.get(r.version, 0) + 1
        entry = self.store.stable().get(name)
        stable = (
            entry["version"] if entry else (next(iter(versions)) if len(versions) == 1 else None)
        )
        try:
            kind = self.platform.get(name).kind
        except CatalogError:
            kind = "service"
        rollout = self.rollouts.get(name) if self.rollouts.active(name) else None
        return ServiceStatus(
            name=name,
            replicas=len(mine),
            healthy=sum(1 for r in mine if r.passing),
            versions=dict(sorted(versions.items())),
            # A compose service's containers are its desired count: there is no other record.
            desired=dict(sorted(versions.items())),
            stable=stable,
            kind=kind,
            addresses=[r.address for r in mine],
            rollout=rollout.phase if rollout is not None else None,
        )

    def _infra(self, containers: list[Container]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for part, port in INFRA_PORTS.items():
            found = [c for c in containers if c.compose_service == part]
            if not found:
                out[part] = {"address": None, "source": None, "state": "missing", "healthy": False}
                continue
            c = found[0]
            running = c.status == "running"
            state = (c.health or "running") if running else c.status
            out[part] = {
                "address": c.published(port) or f"{part}:{port}",
                "source": f"container {c.name} ({c.image})",
                "state": state,
                "healthy": running and c.health in (None, "healthy"),
                **(redis_keeps(c) if part == "redis" else {}),
            }
        return out

    def _replica(self, c: Container, consul: dict[str, bool] | None) -> ReplicaInfo:
        # Both checks: Consul keeps a killed replica's last verdict for its address until the
        # next check, while Docker's health starts over with the restarted container.
        passing = c.status == "running" and c.health in (None, "healthy")
        if consul is not None:
            passing = passing and consul.get(c.address, False)
        if c.status == "restarting":
            state = "backoff"
        elif c.status in ("exited", "dead"):
            state = "stopped" if c.exit_code == 0 else "failed"
        elif c.status == "removing":
            state = "stopping"
        elif c.status != "running":
            state = "starting"
        elif passing:
            state = "ready"
        elif c.health == "unhealthy" or (
            c.started_at is not None and time.time() - c.started_at > STARTING_GRACE
        ):
            state = "unhealthy"
        else:
            state = "starting"
        return ReplicaInfo(
            id=c.name,
            service=c.service or c.compose_service,
            version=c.version,
            address=c.address,
            state=state,
            pid=c.pid or None,
            port=c.port,
            restarts=c.restarts,
            started_at=c.started_at,
            passing=passing,
            last_exit=c.exit_code if c.status != "running" else None,
            log=f"docker logs {c.name}",
            last_reason=_last_reason(c),
            oom_kills=self._oom.kills(c.id, c.oom_killed, c.restarts),
            rss_bytes=container_rss(c.id, c.pid) if c.status == "running" else None,
            memory_limit_bytes=c.memory_limit or None,
            cpu_limit_millicores=c.nano_cpus // 1_000_000 or None,
        )

    def replicas(self, service: str | None = None) -> list[ReplicaInfo]:
        """Every container of the service, a stopped or failed one too."""
        containers = self.project.containers()
        consul = self.fleet.consul_passing(containers)
        return [
            self._replica(c, consul)
            for c in containers
            if c.service and (service is None or c.service == service)
        ]

    def _alive_replicas(
        self, service: str | None = None, containers: list[Container] | None = None
    ) -> list[ReplicaInfo]:
        """The replicas that count: running, or about to."""
        if containers is None:
            containers = self.project.containers()
        consul = self.fleet.consul_passing(containers)
        return [
            self._replica(c, consul)
            for c in containers
            if c.service and c.alive and (service is None or c.service == service)
        ]

    def consul_address(self, containers: list[Container] | None = None) -> str:
        return self.fleet.consul_address(containers)

    def consumer_lag(self, service: str) -> float | None:
        scrapes = []
        for c in self._containers_of(service):
            if c.status != "running":
                continue
            text = self.fleet.metrics(c)
            if text is not None:
                scrapes.append(promtext.parse(text))
        return group_lag(scrapes) if scrapes else None

    # -- scaling -------------------------------------------------------------------------------
    def stable_version(self, service: str) -> str:
        return self.fleet.stable_version(service)

    def set_version_replicas(self, service: str, version: str, replicas: int) -> None:
        """Start or stop replicas of any version (below the rollouts)."""
        self.fleet.set_version_replicas(service, version, replicas)

    def scale(self, service: str, replicas: int) -> ServiceStatus:
        try:
            spec = self.platform.get(service)
        except CatalogError as exc:
            raise RuntimeFailure(str(exc)) from None
        if replicas < 0:
            raise RuntimeFailure(f"replicas must be 0 or more, not {replicas}")
        if spec.kind == "gateway" and replicas != 1:
            raise RuntimeFailure("the gateway runs one replica on compose (one published port)")
        if self.rollouts.active(service):
            raise RuntimeFailure(
                f"{service} has a rollout in progress: wait for it or abort it first"
            )
        self.fleet.scale_compose_service(self.fleet.stable_compose_service(service), replicas)
        return self._service_status(service, self._alive_replicas(service))

    def kill_replica(self, replica_id: str, signal: str = "KILL") -> ReplicaInfo:
        found = [
            c
            for c in self.project.containers()
            if c.service and replica_id in (c.name, c.id, c.id[:12])
        ]
        if not found:
            raise RuntimeFailure(f"no replica {replica_id!r} (meshctl status lists them)")
        victim = found[0]
        sig = signal.upper().removeprefix("SIG")
        docker("kill", "-s", sig, victim.id, what=f"docker kill {victim.name}")
        # Docker takes `docker kill` for a manual stop: no restart policy applies (checked
        # with unless-stopped on engine 20.10). Start it again once it has exited, as the
        # policy would after a crash. A signal it survives leaves it running.
        grace = 5.0 if sig in ("KILL", "9") else 35.0
        deadline = time.monotonic() + grace
        current = victim
        while time.monotonic() < deadline:
            current = self.fleet.inspect(victim.id)
            if current.status in ("exited", "dead") or current.restarts > victim.restarts:
                break
            time.sleep(0.1)
        if current.status in ("exited", "dead"):
            docker("start", victim.id, what=f"docker start {victim.name}")
            current = self.fleet.inspect(victim.id)
        return self._replica(current, self.fleet.consul_passing())

    def autoscale(self, enabled: bool | None = None) -> AutoscaleStatus:
        """The local runtime's autoscaler, run by a process of its own (see
        :mod:`infra.compose.autoscaler`)."""
        if enabled and not self.running():
            raise RuntimeFailure(
                f"compose project {self.project.name} is not running (make up RUNTIME=compose)"
            )
        if enabled:
            self.autoscaler.start()
        elif enabled is False:
            self.autoscaler.stop()
        return self.autoscaler.status()

    # -- infrastructure faults ----------------------------------------------------------------
    def _part(self, part: str) -> Container | None:
        if part not in self.INFRA_PARTS:
            raise RuntimeFailure(
                f"no infrastructure part {part!r} (known: {', '.join(self.INFRA_PARTS)})"
            )
        found = [c for c in self.project.containers() if c.compose_service == part]
        return found[0] if found else None

    def stop_infra(self, part: str) -> None:
        if self._part(part) is None:
            raise RuntimeFailure(f"{part} of compose project {self.project.name} is not there")
        self.project.compose("stop", part, what=f"docker-compose stop {part}", timeout=120)

    def crash_infra(self, part: str) -> None:
        """SIGKILL the part's container (no shutdown, no last write); Docker takes the kill
        for a manual stop, so it stays down until :meth:`start_infra`."""
        found = self._part(part)
        if found is None or found.status != "running":
            raise RuntimeFailure(f"{part} of compose project {self.project.name} is not running")
        self.project.compose("kill", "-s", "KILL", part, what=f"compose kill {part}", timeout=60)
        deadline = time.monotonic() + 10.0
        while True:
            current = self._part(part)
            if current is None or current.status in ("exited", "dead"):
                return
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"{part} still {current.status} 10s after SIGKILL")
            time.sleep(0.1)

    def set_redis_persistence(self, mode: str) -> None:
        """Recreate the Redis container with infra/redis/<mode>.conf, recorded in state.env
        so every later compose call renders the same service. Turning it on from off first
        has the running Redis write its append-only file (CONFIG SET, a rewrite from what it
        holds), so the new container loads what the old one had; turning it off forgets what
        Redis holds, as off does at any restart."""
        try:
            mode = redis_mode({REDIS_PERSISTENCE_VAR: mode})
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None
        found = self._part("redis")
        if found is None or found.status != "running":
            raise RuntimeFailure("redis is not running: start it first")
        if redis_keeps(found)["persistence"] == mode:
            return
        if mode != "off" and redis_keeps(found)["persistence"] == "off":
            redis_aof_now(found, mode)
        started = time.monotonic()
        self.project.record(REDIS_PERSISTENCE_VAR, mode)
        self.project.compose(
            "up", "-d", "--no-deps", "--no-build", "--force-recreate", "redis",
            what="compose up redis", timeout=180,
        )  # fmt: skip
        self._wait_part("redis", started, quiet)

    def start_infra(self, part: str, progress: Progress = quiet) -> None:
        if self._part(part) is None:
            raise RuntimeFailure(f"{part} of compose project {self.project.name} is not there")
        started = time.monotonic()
        self.project.compose("start", part, what=f"docker-compose start {part}", timeout=120)
        if part == "kafka":
            # The topics may be gone with the broker (the stand-in keeps them in memory), and
            # the services reconnect at once: the first produce would create a topic with the
            # broker's defaults. So the kafka-init job runs right away (it retries until the
            # broker answers) and creates the missing ones, as at `up`.
            done = self.project.compose(
                "run", "--rm", "--no-deps", "-T", "kafka-init",
                what="docker-compose run kafka-init", timeout=180,
            )  # fmt: skip
            took = time.monotonic() - started
            progress(f"kafka-init after {took:.1f}s: {last_line(done.stdout) or 'done'}")
        self._wait_part(part, started, progress)

    def _wait_part(self, part: str, started: float, progress: Progress) -> None:
        said = ""
        while True:
            current = self._part(part)
            state = "missing" if current is None else (current.health or current.status)
            if state in ("healthy", "running"):
                break
            if state != said:
                progress(f"{part}: {state}")
                said = state
            if time.monotonic() - started > INFRA_WAIT:
                raise RuntimeFailure(f"{part} not healthy {INFRA_WAIT:.0f}s after its start")
            time.sleep(0.5)
        progress(f"{part}: healthy after {time.monotonic() - started:.1f}s")

    # -- the persistence lesson: down then up, with and without Redis's named volume ----------
    def redis_without_volume(self, without: bool, progress: Progress = quiet) -> None:
        """``without``: recreate Redis with /data on an anonymous volume (an override that
        every compose call reads while it is there), as a compose file without the volume
        lines runs it; the named volume is not touched. Then ``False`` puts Redis back on
        the named volume (what it held before is there again) and removes the anonymous
        volumes this runtime made."""
        override = self.project.state_dir / INFRA_OVERRIDE
        current = self._part("redis")
        if current is not None and (name := anonymous_data_volume(current)):
            self._anonymous.add(name)
        if without:
            override.parent.mkdir(parents=True, exist_ok=True)
            override.write_text(WITHOUT_VOLUME)
        else:
            override.unlink(missing_ok=True)
        started = time.monotonic()
        self.project.compose(
            "up", "-d", "--no-deps", "--no-build", "redis", what="compose up redis", timeout=180
        )
        self._wait_part("redis", started, progress)
        if not without:
            for name in sorted(self._anonymous):
                docker("volume", "rm", name, what=f"docker volume rm {name[:12]}")
                progress(f"removed the anonymous volume {name[:12]}")
            self._anonymous.clear()

    def down_up(self, progress: Progress = quiet) -> float:
        """``compose down`` (named volumes stay, as without ``-v``) then ``up`` with the same
        files and settings, until every replica passes again; the seconds it took."""
        current = self._part("redis")
        if current is not None and (name := anonymous_data_volume(current)):
            self._anonymous.add(name)  # down leaves it behind; the next up makes a new one
        env = {
            **self.project.environ,
            "MESH_COMPOSE_PROJECT": self.project.name,
            "MESH_COMPOSE_INFRA": "local" if TEST_OVERRIDE in self.project.base_files else "images",
        }
        stack = ComposeStack(self.mesh_home, env, self.platform)
        started = time.monotonic()
        stack.down(progress)
        stack.up(progress)
        return time.monotonic() - started

    # -- rollouts ------------------------------------------------------------------------------
    def _check_rollout(self, spec: RolloutSpec) -> None:
        try:
            service = self.platform.get(spec.service)
        except CatalogError as exc:
            raise RuntimeFailure(str(exc)) from None
        if service.kind == "gateway":
            raise RuntimeFailure("the gateway is not rolled out on compose (one published port)")
        self.versions.definition(spec.service)  # the service exists in the compose files
        if spec.version != self.versions.base_version(spec.service):
            self.versions.ensure(spec.service, spec.version)  # a bad version file stops here

    def rollout(self, spec: RolloutSpec) -> RolloutStatus:
        return self.rollouts.start(spec)

    def rollout_status(self, service: str) -> RolloutStatus | None:
        return self.rollouts.get(service)

    def rollout_abort(self, service: str) -> RolloutStatus:
        return self.rollouts.abort(service)

    def rollout_promote(self, service: str) -> RolloutStatus:
        return self.rollouts.promote(service)


def _last_reason(c: Container) -> str | None:
    """Why its last run ended, as Kubernetes says it. A running container restarted for
    another reason has no trace of it left (the engine resets the exit code): None."""
    if c.oom_killed:
        return "OOMKilled"
    if c.status in ("exited", "dead", "restarting"):
        return "Completed" if c.exit_code == 0 else "Error"
    return None
