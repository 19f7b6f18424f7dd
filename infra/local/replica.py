"""One replica: a service process at one version on one port, and its life story.

    starting -> ready <-> unhealthy -> stopping -> (gone)
        \\-> (crash) -> backoff / crashloop -> starting ...   -> failed (gave up)

"ready" means passing in Consul, which is what the gateway routes on. A replica is a child of
the supervisor (``detached=False``): if the supervisor dies, the kernel stops it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from infra.process import ManagedProcess
from infra.runtime.models import ReplicaInfo
from infra.runtime.versions import Resources
from services.common.backoff import Backoff

HOST = "127.0.0.1"


class State(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    CRASHLOOP = "crashloop"
    FAILED = "failed"


# Which replica goes first when there are too many: the least useful, then the newest.
STOP_ORDER = {
    State.FAILED: 0,
    State.CRASHLOOP: 1,
    State.BACKOFF: 2,
    State.STARTING: 3,
    State.UNHEALTHY: 4,
    State.READY: 5,
    State.STOPPING: 6,
}
WAITING = frozenset({State.BACKOFF, State.CRASHLOOP})


def instance_id(service: str, port: int) -> str:
    """The Consul service ID the kit registers: ``<name>-<address>-<port>``."""
    return f"{service}-{HOST}-{port}"


@dataclass(eq=False)
class Replica:
    service: str
    version: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    cwd: Path
    backoff: Backoff
    state: State = State.STARTING
    process: ManagedProcess | None = None
    restarts: int = 0
    crashes_in_row: int = 0
    started_at: float = 0.0  # wall clock, for people
    started_mono: float = 0.0
    restart_at: float | None = None
    passing: bool = False
    ever_ready: bool = False
    last_exit: int | None = None
    last_reason: str | None = None  # OOMKilled, Error, Completed (as Kubernetes says it)
    pids: list[int] = field(default_factory=list)  # every pid this replica ever had
    # Its version's requests and limits, and what the resource guard measured and did.
    resources: Resources = field(default_factory=Resources)
    cgroup: Path | None = None
    cgroup_oom_kills: int = 0  # memory.events oom_kill when its process started
    kill_reason: str | None = None  # set by whoever kills the current process on purpose
    oom_kills: int = 0
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    cpu_percent: float | None = None

    @property
    def id(self) -> str:
        return instance_id(self.service, self.port)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.service}-{self.version}-{self.port}.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.popen else None

    @property
    def running(self) -> bool:
        """A process of this replica is meant to be up (not waiting to restart, not gone)."""
        return self.state not in WAITING | {State.FAILED} and self.pid is not None

    def start(
        self, clock: Callable[[], float] = time.monotonic, cgroup: Path | None = None
    ) -> None:
        self.process = ManagedProcess(
            f"{self.service}-{self.version}-{self.port}",
            self.argv,
            log_path=self.log_path,
            env=self.env,
            cwd=self.cwd,
            cgroup=cgroup,
        )
        self.kill_reason = None
        self.rss_bytes = self.cpu_percent = None
        self.process.start()
        self.pids.append(self.process.pid)
        self.state = State.STARTING
        self.passing = False
        self.ever_ready = False
        self.started_at = time.time()
        self.started_mono = clock()
        self.restart_at = None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (reaping it), else ``None``."""
        if self.process is None or self.process.popen is None:
            return None
        return self.process.popen.poll()

    def crashed(
        self,
        code: int,
        now: float,
        stable_after: float,
        crashloop_after: int,
        max_restarts: int,
        reason: str | None = None,
    ) -> None:
        """Record an unexpected exit and schedule the restart (or give up)."""
        self.last_exit = code
        self.last_reason = reason or ("Completed" if code == 0 else "Error")
        self.passing = False
        if now - self.started_mono >= stable_after:
            # It ran well for a while: this is a new incident, not a crash loop.
            self.crashes_in_row = 0
            self.backoff.reset()
        self.crashes_in_row += 1
        if self.crashes_in_row > max_restarts:
            self.state = State.FAILED
            self.restart_at = None
            return
        self.state = State.CRASHLOOP if self.crashes_in_row >= crashloop_after else State.BACKOFF
        self.restart_at = now + self.backoff.next()

    def observe(self, passing: bool) -> None:
        """Take the Consul check's verdict for a running replica."""
        if self.state not in (State.STARTING, State.READY, State.UNHEALTHY):
            return
        self.passing = passing
        if passing:
            self.state = State.READY
            self.ever_ready = True
        else:
            self.state = State.UNHEALTHY if self.ever_ready else State.STARTING

    def tail(self, lines: int = 3) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            id=self.id,
            service=self.service,
            version=self.version,
            address=f"{HOST}:{self.port}",
            state=self.state.value,
            pid=self.pid if self.state not in WAITING | {State.FAILED} else None,
            port=self.port,
            restarts=self.restarts,
            started_at=self.started_at,
            passing=self.passing,
            last_exit=self.last_exit,
            log=str(self.log_path),
            last_reason=self.last_reason,
            oom_kills=self.oom_kills,
            rss_bytes=self.rss_bytes if self.running else None,
            peak_rss_bytes=self.peak_rss_bytes,
            cpu_percent=self.cpu_percent if self.running else None,
            memory_limit_bytes=self.resources.memory_limit,
            cpu_limit_millicores=self.resources.cpu_limit,
        )
