"""The rollout :class:`~infra.local.rollouts.target.Target` of the compose runtime: a version's
replica count is its compose service's ``--scale``; readiness is Consul's check plus the
gateway routing to the container's address; traffic is the weights in Consul KV."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from infra.compose.fleet import ComposeFleet
from infra.compose.project import last_line, run
from infra.local.rollouts.target import AbortRollout

POLL = 0.5
CRASHES = 3  # restarts of one container during a wait: it keeps crashing, give up
T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` on a thread of its own: executors refuse new work once the
    interpreter starts to exit, and a meshctl process that is exiting still finishes the
    rollout it runs (see :mod:`infra.compose.rollouts`)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="compose-call", daemon=True).start()
    return await future


class ComposeTarget:
    def __init__(self, fleet: ComposeFleet) -> None:
        self.fleet = fleet
        self._desired: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._compose_lock: asyncio.Lock | None = None  # made in the rollouts' loop

    def stable(self, service: str) -> str:
        return self.fleet.stable_version(service)

    def set_stable(self, service: str, version: str) -> None:
        self.fleet.set_stable(service, version)

    def desired(self, service: str, version: str) -> int:
        wanted = self._desired.get((service, version))
        if wanted is not None:
            return wanted
        return len(self.fleet.version_containers(service, version))

    def set_desired(self, service: str, version: str, count: int) -> None:
        # Returns at once, as on the local runtime; the waits below await the command.
        self._desired[(service, version)] = count
        self._pending[(service, version)] = asyncio.ensure_future(
            self._scale(service, version, count)
        )

    async def _scale(self, service: str, version: str, count: int) -> None:
        # One docker-compose at a time, in order (the lock is FIFO): an abort's scale-down
        # must not overtake the scale-up it undoes.
        if self._compose_lock is None:
            self._compose_lock = asyncio.Lock()
        async with self._compose_lock:
            await in_thread(self.fleet.set_version_replicas, service, version, count)

    def smoke_path(self, service: str) -> str | None:
        return self.fleet.platform.get(service).smoke_path

    async def _applied(self, service: str, version: str) -> None:
        pending = self._pending.pop((service, version), None)
        if pending is None:
            return
        try:
            # Shielded: an abort that cancels this wait must not cut the command's turn short
            # (the lock would let the rollback's command run next to it).
            await asyncio.shield(pending)
        except Exception as exc:
            raise AbortRollout(f"scaling {service} {version} failed: {exc}") from None

    async def wait_ready(self, service: str, version: str, count: int, timeout: float) -> None:
        await self._applied(service, version)
        deadline = time.monotonic() + timeout
        first_restarts: dict[str, int] = {}
        ready = 0
        while True:
            # One docker ps + inspect per poll, shared by the three questions: each docker CLI
            # call costs the engine and the client tens of ms of CPU, and on a 2-core box a
            # poll that asked three times took a third of a core from the fleet being served.
            everything = await in_thread(self.fleet.project.containers)
            containers = self.fleet.version_containers(service, version, everything)
            passing = await in_thread(self.fleet.passing_addresses, service, version, everything)
            up = [c for c in containers if c.status == "running" and c.address in passing]
            ready = len(up)
            if ready >= count:
                routed = await in_thread(self.fleet.gateway_routes, service, everything)
                if sum(1 for c in up if c.address in routed) >= count:
                    return
            for c in containers:
                first_restarts.setdefault(c.id, c.restarts)
                if c.restarts - first_restarts[c.id] >= CRASHES:
                    tail = await in_thread(_log_tail, c.id)
                    raise AbortRollout(
                        f"{service} {version} keeps crashing ({c.name}, exit {c.exit_code})"
                        + (f": {tail}" if tail else "")
                    )
            if time.monotonic() >= deadline:
                raise AbortRollout(f"{service} {version}: {ready}/{count} ready after {timeout:g}s")
            await asyncio.sleep(POLL)

    async def wait_at_most(self, service: str, version: str, count: int, timeout: float) -> None:
        await self._applied(service, version)
        deadline = time.monotonic() + timeout
        while len(await in_thread(self.fleet.version_containers, service, version)) > count:
            if time.monotonic() >= deadline:
                raise AbortRollout(
                    f"{service} {version}: replicas still running after {timeout:g}s"
                )
            await asyncio.sleep(POLL)

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        await in_thread(self.fleet.set_weights, service, weights)

    async def gateway_metrics(self) -> str:
        return await in_thread(self.fleet.gateway_metrics)

    async def smoke(self, path: str, version: str) -> str | None:
        return await in_thread(self.fleet.smoke, path, version)


def _log_tail(container: str) -> str:
    done = run(["docker", "logs", "--tail", "3", container], what="docker logs", check=False)
    return last_line(done.stdout + done.stderr)
