"""The autoscaler on compose: the local runtime's own (:class:`infra.local.autoscaler.Autoscaler`,
the HPA algorithm of ``infra/local/hpa.py`` on the signals of ``infra/local/signals.py``),
scaling the compose service of each service's stable version.

Compose has no controller to run it, so ``meshctl autoscale on`` starts a process of its own
(``python -m infra.compose.autoscaler``, detached, pid in ``.mesh/compose/<project>/
autoscaler.pid``), and ``autoscale off`` or ``meshctl down`` stops it. Its decisions are JSON
lines in ``.mesh/compose/<project>/autoscaler.jsonl``, the local runtime's format, which
``autoscale status`` reads. A service in a rollout (its record says a live meshctl runs it)
is left alone, as on the local runtime.

Signals: requests in flight and consumer lag from each ready replica's ``/metrics`` (at its
container address, else through ``docker exec``); CPU from the container's main process when
this machine sees it (a Linux engine; on Docker Desktop the process is in a VM and CPU reads
n/a, the other metrics still count).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from infra.compose.fleet import ComposeFleet
from infra.compose.project import ComposeProject, Container
from infra.embedded import mesh_home
from infra.local.autoscaler import KEEP_DECISIONS, Autoscaler
from infra.local.catalog import Platform, load_platform, platform_path
from infra.local.signals import Target
from infra.runtime.base import RuntimeFailure
from infra.runtime.models import AutoscaleStatus, ScaleDecision

log = logging.getLogger("infra.compose.autoscaler")

PID_FILE = "autoscaler.pid"
LOG_FILE = "autoscaler.jsonl"
OUTPUT_FILE = "autoscaler.log"
# The container's StartedAt and its process's start, as this machine sees them.
SAME_PROCESS = 5.0
STOP_WAIT = 90.0  # a scale-down in flight drains replicas (stop_grace_period 30 s)


def host_pid(c: Container) -> int | None:
    """The container's main process as this machine sees it, or None (Docker Desktop: the
    pid is the VM's; a pid that happens to exist here started at another time)."""
    if not c.pid or c.started_at is None:
        return None
    try:
        created = psutil.Process(c.pid).create_time()
    except psutil.Error:
        return None
    return c.pid if abs(created - c.started_at) < SAME_PROCESS else None


class ContainerWorkloads:
    """:class:`infra.local.autoscaler.Workloads` over a compose project's containers. Never
    raises: a Docker or Consul hiccup is logged and read as "no change" this time."""

    def __init__(self, fleet: ComposeFleet) -> None:
        self.fleet = fleet
        self._pending: dict[tuple[str, str], int] = {}
        self._by_address: dict[str, Container] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def stable(self, service: str) -> str | None:
        try:
            return self.fleet.stable_version(service)
        except RuntimeFailure as exc:
            log.warning("stable version of %s: %s", service, exc)
            return None

    def desired(self, service: str, version: str) -> int:
        with self._lock:
            pending = self._pending.get((service, version))
        if pending is not None:
            return pending  # a scale in flight: its target is the current count
        try:
            return len(self.fleet.version_containers(service, version))
        except RuntimeFailure as exc:
            log.warning("replicas of %s: %s", service, exc)
            return 0  # the autoscaler leaves a service at 0 alone

    def set_desired(self, service: str, version: str, count: int) -> None:
        with self._lock:
            self._pending[(service, version)] = count

        def scale() -> None:
            try:
                self.fleet.set_version_replicas(service, version, count)
            except RuntimeFailure as exc:
                log.error("scaling %s %s to %d failed: %s", service, version, count, exc)
            finally:
                with self._lock:
                    if self._pending.get((service, version)) == count:
                        del self._pending[(service, version)]

        thread = threading.Thread(target=scale, name=f"scale-{service}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def ready(self, service: str) -> list[Target]:
        try:
            everything = self.fleet.project.containers()  # Consul's container among them
            passing = self.fleet.consul_passing(everything) or {}
            containers = [c for c in everything if c.service == service]
        except RuntimeFailure as exc:
            log.warning("containers of %s: %s", service, exc)
            return []
        ready = [
            c
            for c in containers
            if c.status == "running" and c.health in (None, "healthy") and passing.get(c.address)
        ]
        with self._lock:
            self._by_address.update({c.address: c for c in ready})
        return [Target(c.address, host_pid(c)) for c in ready]

    async def scrape(self, address: str) -> str:
        with self._lock:
            container = self._by_address.get(address)
        if container is None:
            raise LookupError(f"no container at {address}")
        text = await asyncio.to_thread(self.fleet.metrics, container)
        if text is None:
            raise LookupError(f"no metrics from {container.name}")
        return text

    def finish(self, timeout: float) -> None:
        """Let the scale commands in flight end (a container half-started helps nobody)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))


# -- the process --------------------------------------------------------------------------------
def run(home: Path, environ: Mapping[str, str]) -> None:
    project = ComposeProject.from_state(home, environ)
    platform = load_platform(platform_path(environ))
    fleet = ComposeFleet(project, platform)
    workloads = ContainerWorkloads(fleet)
    autoscaler = Autoscaler(
        platform,
        workloads,
        busy=fleet.store.busy,
        scrape=workloads.scrape,
        log_path=project.state_dir / LOG_FILE,
    )
    autoscaler.set_enabled(True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        task = asyncio.ensure_future(autoscaler.run())
        await stop.wait()
        task.cancel()

    asyncio.run(main())
    workloads.finish(STOP_WAIT - 10)


class AutoscalerProcess:
    """Starts, finds and stops the autoscaler process of one compose project."""

    def __init__(self, project: ComposeProject, home: Path, platform: Platform) -> None:
        self.project = project
        self.home = home
        self.platform = platform
        self.pid_file = project.state_dir / PID_FILE
        self.log = project.state_dir / LOG_FILE

    def _record(self) -> dict[str, float] | None:
        try:
            data = json.loads(self.pid_file.read_text())
            return {"pid": int(data["pid"]), "started": float(data["started"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def pid(self) -> int | None:
        record = self._record()
        if record is None:
            return None
        pid = int(record["pid"])
        try:
            alive = abs(psutil.Process(pid).create_time() - record["started"]) < 1.0
        except psutil.Error:
            alive = False
        return pid if alive else None

    def start(self) -> None:
        if self.pid() is not None:
            return
        self.project.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.project.environ, "MESH_HOME": str(self.home)}
        with open(self.project.state_dir / OUTPUT_FILE, "a") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "infra.compose.autoscaler"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it outlives this meshctl, as a controller would
            )
        started = psutil.Process(child.pid).create_time()
        self.pid_file.write_text(json.dumps({"pid": child.pid, "started": started}))

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(timeout=STOP_WAIT)
        except psutil.TimeoutExpired:
            process.kill()
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> AutoscaleStatus:
        record = self._record() if self.pid() is not None else None
        since = record["started"] if record else None
        decisions: dict[str, list[ScaleDecision]] = {
            s.name: [] for s in self.platform.services if s.autoscale is not None
        }
        if since is not None:
            try:
                lines = self.log.read_text().splitlines()
            except OSError:
                lines = []
            for line in lines:
                try:
                    decision = ScaleDecision.model_validate_json(line)
                except ValueError:
                    continue
                if decision.at >= since and decision.service in decisions:
                    decisions[decision.service].append(decision)
        return AutoscaleStatus(
            enabled=since is not None,
            services={k: v[-KEEP_DECISIONS:] for k, v in decisions.items()},
            log=str(self.log),
        )


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(mesh_home(), os.environ)
    except RuntimeFailure as exc:
        log.error("%s", exc)
        sys.exit(1)
