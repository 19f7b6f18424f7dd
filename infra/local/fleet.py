"""The replicas the supervisor owns, and the loop that makes them match what is desired.

Everything that changes replica counts (``scale``, rollouts, the autoscaler) only edits
``desired[service][version]``; :meth:`Fleet.reconcile` starts and stops processes until the
replicas match, restarts crashed ones with exponential backoff, and gives up on a replica
that keeps crashing. Like a Kubernetes ReplicaSet controller, in one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from infra.local.catalog import Platform, ServiceSpec
from infra.local.environment import ReplicaEnvironment
from infra.local.limits import ResourceGuard
from infra.local.replica import STOP_ORDER, WAITING, Replica, State
from infra.process import StartError, free_port, port_in_use
from services.common.backoff import Backoff

log = logging.getLogger(__name__)

Forget = Callable[[str], Awaitable[None]]


class FleetError(ValueError):
    """A request the fleet refuses; the message is one line."""


class Fleet:
    def __init__(
        self,
        platform: Platform,
        environment: ReplicaEnvironment,
        *,
        gateway_port: int,
        forget: Forget,
        cwd: Path,
        guard: ResourceGuard | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = platform
        # Enforces the versions' resource limits; measures what each replica uses.
        self.guard = guard or ResourceGuard(cwd, use_cgroups=False)
        self.environment = environment
        self.gateway_port = gateway_port
        self.forget = forget  # deregisters an instance that died without doing it itself
        self.cwd = cwd
        self.clock = clock
        self.replicas: list[Replica] = []
        self.desired: dict[str, dict[str, int]] = {}
        self.stable: dict[str, str] = {}
        self.revision = 0  # bumped on every change, so the state file is rewritten
        self._stops: dict[Replica, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- desired state -----------------------------------------------------------------------
    def set_desired(self, service: str, version: str, count: int) -> None:
        spec = self.platform.get(service)
        if spec.kind == "gateway" and count > 1:
            raise FleetError("the gateway runs one replica on the local runtime (one port)")
        versions = self.desired.setdefault(service, {})
        if count <= 0:
            versions.pop(version, None)
        else:
            versions[version] = count
        self.revision += 1

    def desired_of(self, service: str, version: str) -> int:
        return self.desired.get(service, {}).get(version, 0)

    def set_stable(self, service: str, version: str) -> None:
        self.stable[service] = version
        self.revision += 1

    def of(
        self, service: str, version: str | None = None, *, include_stopping: bool = False
    ) -> list[Replica]:
        return [
            r
            for r in self.replicas
            if r.service == service
            and (version is None or r.version == version)
            and (include_stopping or r.state is not State.STOPPING)
        ]

    def find(self, replica_id: str) -> Replica:
        for replica in self.replicas:
            if replica.id == replica_id or str(replica.pid) == replica_id:
                return replica
        raise FleetError(f"no replica {replica_id!r} (see meshctl status)")

    # -- observation -------------------------------------------------------------------------
    def observe(self, passing: set[str]) -> None:
        for replica in self.replicas:
            before = replica.state
            replica.observe(replica.id in passing)
            if replica.state is not before:
                self.revision += 1

    # -- the loop ----------------------------------------------------------------------------
    def reconcile(self) -> None:
        """One pass: notice exits, restart what is due, then add or remove replicas."""
        now = self.clock()
        runtime = self.platform.runtime
        for replica in list(self.replicas):
            if replica.state is State.STOPPING:
                continue
            if replica.state in WAITING:
                if replica.restart_at is not None and now >= replica.restart_at:
                    self._restart(replica)
                continue
            if replica.state is State.FAILED:
                continue
            code = replica.exit_code()
            if code is None:
                continue
            replica.crashed(
                code,
                now,
                runtime.stable_after,
                runtime.crashloop_after,
                runtime.max_restarts,
                reason=self.guard.exited(replica),
            )
            self.revision += 1
            log.warning(
                "replica exited",
                extra={
                    "replica": replica.id,
                    "version": replica.version,
                    "exit_code": code,
                    "reason": replica.last_reason,
                    "state": replica.state.value,
                    "log_tail": replica.tail(),
                },
            )
            self._spawn(self.forget(replica.id))
        for spec in self.platform.service:
            self._match(spec)

    def _match(self, spec: ServiceSpec) -> None:
        wanted = self.desired.get(spec.name, {})
        for version in {*wanted, *(r.version for r in self.of(spec.name))}:
            live = self.of(spec.name, version)
            missing = wanted.get(version, 0) - len(live)
            for _ in range(missing):
                self._start(spec, version)
            if missing < 0:
                victims = sorted(live, key=lambda r: (STOP_ORDER[r.state], -r.started_mono))
                for replica in victims[:-missing]:
                    self._stop(replica)

    def _port_for(self, spec: ServiceSpec) -> int:
        if spec.kind == "gateway":
            return self.gateway_port
        taken = {r.port for r in self.replicas}
        for _ in range(50):
            port = free_port()
            if port not in taken:
                return port
        raise StartError("no free port for a replica")

    def _start(self, spec: ServiceSpec, version: str) -> None:
        port = self._port_for(spec)
        runtime = self.platform.runtime
        replica = Replica(
            service=spec.name,
            version=version,
            port=port,
            argv=spec.command(),
            env=self.environment.build(spec, version, port),
            log_dir=self.environment.files.logs,
            cwd=self.cwd,
            backoff=Backoff(base=runtime.restart_backoff, cap=runtime.restart_backoff_max),
            resources=self.environment.resources(spec, version),
        )
        self.replicas.append(replica)
        self._launch(replica)
        log.info(
            "replica started", extra={"replica": replica.id, "version": version, "pid": replica.pid}
        )

    def _launch(self, replica: Replica) -> None:
        try:
            replica.start(clock=self.clock, cgroup=self.guard.cgroup_for(replica))
        except StartError as exc:
            replica.crashed(127, self.clock(), 0.0, 1, 0)
            log.error("replica cannot start: %s", exc, extra={"replica": replica.id})
        self.revision += 1

    def _restart(self, replica: Replica) -> None:
        spec = self.platform.get(replica.service)
        if spec.kind != "gateway" and port_in_use(replica.port):
            # Someone took the port while it was down: move (a new Consul ID too).
            replica.port = self._port_for(spec)
        replica.restarts += 1
        replica.env = self.environment.build(spec, replica.version, replica.port)
        replica.resources = self.environment.resources(spec, replica.version)
        self._launch(replica)
        log.info("replica restarted", extra={"replica": replica.id, "restarts": replica.restarts})

    def _stop(self, replica: Replica) -> None:
        if replica.state in WAITING or replica.state is State.FAILED or replica.process is None:
            self.replicas.remove(replica)
            self.guard.forget(replica)
            self.revision += 1
            return
        replica.state = State.STOPPING
        replica.passing = False
        self.revision += 1
        grace = self.platform.runtime.shutdown_grace + 2.0
        self._stops[replica] = asyncio.create_task(self._stop_and_forget(replica, grace))

    async def _stop_and_forget(self, replica: Replica, grace: float) -> None:
        process = replica.process
        assert process is not None
        # SIGTERM to its group: the kit deregisters, drains and exits within its grace.
        code = await asyncio.to_thread(process.stop, grace)
        replica.last_exit = code
        if code not in (0, None):
            await self.forget(replica.id)
        self.replicas.remove(replica)
        self.guard.forget(replica)
        self._stops.pop(replica, None)
        self.revision += 1
        log.info("replica stopped", extra={"replica": replica.id, "exit_code": code})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[assignment]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- drills and shutdown -----------------------------------------------------------------
    def kill(self, replica_id: str, signame: str = "KILL") -> Replica:
        replica = self.find(replica_id)
        try:
            sig = signal.Signals[f"SIG{signame.upper().removeprefix('SIG')}"]
        except KeyError:
            raise FleetError(f"unknown signal {signame!r}") from None
        pid = replica.pid
        if pid is None or replica.state in WAITING | {State.FAILED, State.STOPPING}:
            raise FleetError(f"replica {replica.id} is not running ({replica.state.value})")
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        return replica

    def pids(self) -> list[int]:
        return [pid for r in self.replicas for pid in r.pids]

    async def stop_all(self) -> None:
        """Stop every replica gracefully: the services first, the gateway last."""
        self.desired.clear()
        gateway = self.platform.gateway.name
        for group in (
            [r for r in self.replicas if r.service != gateway],
            [r for r in self.replicas if r.service == gateway],
        ):
            for replica in group:
                if replica.state is not State.STOPPING:
                    self._stop(replica)
            await _wait_all(self._stops[r] for r in group if r in self._stops)
        await _wait_all(list(self._tasks))


async def _wait_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
