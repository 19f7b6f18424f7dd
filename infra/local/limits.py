"""Resource limits of the local runtime's replicas, as their version files declare them.

Memory is enforced one of two ways, chosen once when the supervisor starts:

- by the kernel, when the machine offers a writable cgroup v2 hierarchy whose root
  delegates the ``memory`` controller (root on a cgroup v2 host): each replica runs in a
  cgroup of its own under ``<cgroup2 mount>/mesh/<platform>/`` with ``memory.max``; the
  kernel's OOM killer ends a replica above it, and ``memory.events`` (``oom_kill``) tells
  that it was the limit;
- otherwise by the supervisor, the way kubelet's eviction works: it reads every replica's
  resident memory (its process and their descendants) every ``WATCH_EVERY`` and kills the
  process group with SIGKILL above the limit.

Either way the replica ends with reason ``OOMKilled`` and restarts with backoff.

CPU is limited only where the kernel can do it: ``cpu.max`` in the replica's cgroup when
the ``cpu`` controller is delegated. Anywhere else CPU limits are not enforced, and
``meshctl status`` says so; nothing throttles a process by stopping and continuing it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from infra.runtime.models import LimitsEnforcement

if TYPE_CHECKING:
    from infra.local.replica import Replica

log = logging.getLogger(__name__)

WATCH_EVERY = 0.05  # seconds between two reads of every replica's memory
CPU_WINDOW = 1.0  # the CPU percent shown is measured over about this long
MEMBERS_EVERY = 1.0  # how often a replica's descendants are looked for again
CPU_PERIOD_US = 100_000  # cpu.max period, the kernel's default
OOM_KILLED = "OOMKilled"


def _mountinfo_cgroup2(mountinfo: str) -> Path | None:
    """The mount point of the cgroup v2 hierarchy (``fstype cgroup2``), if there is one."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


@dataclass(frozen=True)
class CgroupV2:
    """Replica cgroups under ``base`` (``<mount>/mesh/<platform>``) with the controllers the
    hierarchy's root delegates."""

    base: Path
    controllers: frozenset[str]

    @classmethod
    def detect(cls, home: Path, mount: Path | None = None) -> tuple[CgroupV2 | None, str]:
        """The cgroups the supervisor can create, or ``None`` and the reason it cannot."""
        if mount is None:
            try:
                mount = _mountinfo_cgroup2(Path("/proc/self/mountinfo").read_text())
            except OSError:
                mount = None
        if mount is None:
            return None, "no cgroup v2 hierarchy is mounted"
        try:
            available = (mount / "cgroup.controllers").read_text().split()
            delegated = set((mount / "cgroup.subtree_control").read_text().split())
        except OSError as exc:
            return None, f"cannot read the cgroup v2 hierarchy at {mount}: {exc.strerror}"
        wanted = delegated & {"memory", "cpu"}
        if "memory" not in wanted:
            return None, (
                f"the cgroup v2 hierarchy at {mount} delegates no memory controller "
                f"(it has: {' '.join(available) or 'none'}; cgroup v1 is not used)"
            )
        if not os.access(mount, os.W_OK):
            return None, f"the cgroup v2 hierarchy at {mount} is not writable (not root?)"
        tag = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        base = mount / "mesh" / tag
        try:
            for folder in (base.parent, base):
                folder.mkdir(exist_ok=True)
                (folder / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in sorted(wanted))
                )
        except OSError as exc:
            return None, f"cannot set up cgroups under {base}: {exc.strerror}"
        return cls(base, frozenset(wanted)), f"cgroup v2 under {base}"

    def create(self, name: str, memory_max: int | None, cpu_millis: int | None) -> Path:
        path = self.base / name
        path.mkdir(exist_ok=True)
        (path / "memory.max").write_text(str(memory_max) if memory_max else "max")
        # Swap would let a limited process go on past memory.max, slower; kubelet turns it off.
        swap = path / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")
        if "cpu" in self.controllers:
            quota = cpu_millis * CPU_PERIOD_US // 1000 if cpu_millis else "max"
            (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        return path

    @staticmethod
    def oom_kills(path: Path) -> int:
        try:
            for line in (path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    @staticmethod
    def remove(path: Path) -> None:
        try:
            path.rmdir()  # only an empty cgroup goes; a live one stays until its next exit
        except OSError:
            pass

    def remove_all(self) -> None:
        if self.base.exists():
            for child in self.base.iterdir():
                if child.is_dir():
                    self.remove(child)
            self.remove(self.base)


@dataclass
class _Watched:
    """What the guard keeps about one running process of a replica."""

    pid: int
    process: psutil.Process
    members: list[psutil.Process]
    members_at: float
    cpu_mark: tuple[float, float]  # (monotonic time, CPU seconds of the members)


class ResourceGuard:
    """Applies the limits to the fleet's replicas and measures their use.

    ``attach`` is called when a replica process starts (its cgroup, kernel path), ``tick``
    every ``WATCH_EVERY`` (usage, and the kill above the limit on the RSS path), ``exited``
    when the fleet finds a process gone (was it the memory limit?).
    """

    def __init__(self, home: Path, *, use_cgroups: bool = True) -> None:
        self.cgroups: CgroupV2 | None = None
        why = "disabled in the catalogue (use_cgroups = false)"
        if use_cgroups:
            self.cgroups, why = CgroupV2.detect(home)
        self._watched: dict[int, _Watched] = {}  # by replica identity
        if self.cgroups is not None:
            cpu = "cgroup" if "cpu" in self.cgroups.controllers else "none"
            cpu_why = "" if cpu == "cgroup" else "; the hierarchy offers no cpu controller"
            self.enforcement = LimitsEnforcement(
                memory="cgroup",
                cpu=cpu,  # type: ignore[arg-type]
                detail=f"memory.max{' and cpu.max' if cpu == 'cgroup' else ''} in {why}" + cpu_why,
            )
        else:
            self.enforcement = LimitsEnforcement(
                memory="rss-watch",
                cpu="none",
                detail=f"memory: the supervisor kills a replica above its limit (RSS read "
                f"every {WATCH_EVERY * 1000:.0f} ms); CPU limits are NOT enforced on this "
                f"machine. No kernel limits because {why}.",
            )
        log.info("resource limits: %s", self.enforcement.detail)

    # -- the replica's life ----------------------------------------------------------------
    def cgroup_for(self, replica: Replica) -> Path | None:
        """The cgroup a replica's next process starts in (kernel path), created now."""
        if self.cgroups is None:
            return None
        limits = replica.resources
        name = f"{replica.service}-{replica.version}-{replica.port}-{id(replica):x}"
        try:
            path = self.cgroups.create(name, limits.memory_limit, limits.cpu_limit)
        except OSError as exc:
            log.error("cannot create the cgroup of %s: %s", replica.id, exc)
            return None
        replica.cgroup = path
        replica.cgroup_oom_kills = self.cgroups.oom_kills(path)
        return path

    def exited(self, replica: Replica) -> str | None:
        """``OOMKilled`` when the memory limit ended the replica's last process."""
        self._watched.pop(id(replica), None)
        if replica.kill_reason is not None:
            return replica.kill_reason
        if self.cgroups is not None and replica.cgroup is not None:
            kills = self.cgroups.oom_kills(replica.cgroup)
            if kills > replica.cgroup_oom_kills:
                replica.cgroup_oom_kills = kills
                replica.oom_kills += 1
                return OOM_KILLED
        return None

    def forget(self, replica: Replica) -> None:
        """The replica is gone for good: its cgroup too."""
        self._watched.pop(id(replica), None)
        if self.cgroups is not None and replica.cgroup is not None:
            self.cgroups.remove(replica.cgroup)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_all()

    # -- measuring and enforcing -------------------------------------------------------------
    def tick(self, replicas: list[Replica], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for replica in replicas:
            pid = replica.pid if replica.running else None
            if pid is None:
                replica.rss_bytes = replica.cpu_percent = None
                self._watched.pop(id(replica), None)
                continue
            watched = self._watch(replica, pid, now)
            if watched is None:
                continue
            rss = _rss(watched.members)
            if rss is None:
                continue
            replica.rss_bytes = rss
            replica.peak_rss_bytes = max(replica.peak_rss_bytes or 0, rss)
            if now - watched.cpu_mark[0] >= CPU_WINDOW:
                cpu = _cpu_seconds(watched.members)
                if cpu is not None:
                    used = max(0.0, cpu - watched.cpu_mark[1])
                    replica.cpu_percent = round(100 * used / (now - watched.cpu_mark[0]), 1)
                    watched.cpu_mark = (now, cpu)
            limit = replica.resources.memory_limit
            if self.cgroups is None and limit is not None and rss > limit:
                self._kill(replica, pid, rss, limit)

    def _watch(self, replica: Replica, pid: int, now: float) -> _Watched | None:
        watched = self._watched.get(id(replica))
        if watched is not None and watched.pid != pid:
            watched = None  # restarted: a new process
        try:
            if watched is None:
                process = psutil.Process(pid)
                members = [process, *process.children(recursive=True)]
                watched = _Watched(pid, process, members, now, (now, _cpu_seconds(members) or 0))
                self._watched[id(replica)] = watched
            elif now - watched.members_at >= MEMBERS_EVERY:
                members = [watched.process, *watched.process.children(recursive=True)]
                if {m.pid for m in members} != {m.pid for m in watched.members}:
                    # Another set of processes: their CPU time starts a new window.
                    watched.cpu_mark = (now, _cpu_seconds(members) or 0.0)
                watched.members = members
                watched.members_at = now
        except psutil.Error:
            return None
        return watched

    def _kill(self, replica: Replica, pid: int, rss: int, limit: int) -> None:
        replica.kill_reason = OOM_KILLED
        replica.oom_kills += 1
        log.warning(
            "replica above its memory limit: killing it",
            extra={
                "replica": replica.id,
                "rss_bytes": rss,
                "memory_limit_bytes": limit,
                "reason": OOM_KILLED,
            },
        )
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._watched.pop(id(replica), None)


def _rss(members: list[psutil.Process]) -> int | None:
    total, seen = 0, False
    for member in members:
        try:
            total += member.memory_info().rss
            seen = True
        except psutil.Error:
            continue  # a descendant that ended since the last look
    return total if seen else None


def _cpu_seconds(members: list[psutil.Process]) -> float | None:
    total, seen = 0.0, False
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        seen = True
    return total if seen else None
