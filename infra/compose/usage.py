"""What a container uses against its limits, read without asking the engine for stats.

``docker stats`` waits for two samples (about two seconds a call), far too slow for the
drills' sampler and the autoscaler, which read the replicas every second. The engine runs on
this machine, so its containers' processes are this machine's: a container's RSS is its
main process's RSS, read from ``/proc`` like the local runtime's supervisor reads a replica's.
Where the engine runs elsewhere (Docker Desktop's VM, a remote ``DOCKER_HOST``) the pid the
engine reports is not ours, the cgroup check below sees it, and the RSS is unknown (None).

OOM kills: the engine keeps ``State.OOMKilled`` for the container's last exit (it stays set
after ``restart: unless-stopped`` brings the container back, until an exit that is not an
OOM kill), and its event log holds only the last 256 events (health checks fill it within a
minute), so :class:`OomCounter` counts the restarts it sees behind an OOMKilled state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil


def container_rss(container_id: str, pid: int) -> int | None:
    """RSS of the container's main process (the entry points exec the app, which forks
    nothing), or None when the process ``pid`` is not the container's on this machine."""
    if pid <= 0:
        return None
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    if container_id not in cgroups:
        return None  # another machine's pid (the engine runs in a VM or elsewhere)
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None  # it ended since the engine answered


@dataclass
class _Seen:
    restarts: int
    kills: int


class OomCounter:
    """OOM kills per container, as seen by this process: the first look at a container whose
    last exit was an OOM kill counts one; each restart seen after it while the state still
    says OOMKilled counts one more."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def kills(self, container_id: str, oom_killed: bool, restarts: int) -> int:
        seen = self._seen.get(container_id)
        if seen is None:
            seen = self._seen[container_id] = _Seen(restarts, 1 if oom_killed else 0)
        elif restarts > seen.restarts:
            if oom_killed:
                seen.kills += restarts - seen.restarts
            seen.restarts = restarts
        return seen.kills
