"""Resource limits on the local runtime, on real processes.

The RSS watch (the supervisor kills a replica above its memory limit, as kubelet's eviction
does) runs on every machine, cgroup v2 or not. The kernel path (cgroup v2 ``memory.max``)
runs where the machine offers a writable cgroup v2 memory controller; where it does not (this
build machine: cgroup v1 with an empty unified hierarchy) that test is skipped and the
cgroup files are checked against a folder laid out as cgroupfs is, which shows what is
written, not what the kernel does with it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from local_support import Load, LocalPlatform, PlatformFactory

from infra.local.limits import OOM_KILLED, CgroupV2, ResourceGuard
from infra.local.replica import Replica, State
from infra.process import wait_until
from infra.runtime.versions import Resources
from services.common.backoff import Backoff

MIB = 1024**2
# Grows by 1 MiB every 20 ms (about 50 MiB/s) up to 300 MiB, then waits.
GROWER = (
    "import time\nkept = []\nfor _ in range(300):\n    kept.append(b'x' * (1 << 20))\n"
    "    time.sleep(0.02)\ntime.sleep(60)\n"
)
SPINNER = "import time\nend = time.time() + 30\nwhile time.time() < end:\n    pass\n"


def child(tmp_path: Path, code: str, memory_limit: int | None = None) -> Replica:
    replica = Replica(
        service="grower",
        version="v1",
        port=1,
        argv=[sys.executable, "-c", code],
        env={},
        log_dir=tmp_path,
        cwd=tmp_path,
        backoff=Backoff(base=0.1, cap=1.0),
        resources=Resources(memory_limit=memory_limit),
    )
    replica.start()
    return replica


def watch(guard: ResourceGuard, replica: Replica, seconds: float) -> int | None:
    """Tick the guard every 50 ms (as the supervisor does) until the child exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        guard.tick([replica])
        code = replica.exit_code()
        if code is not None:
            return code
        time.sleep(0.05)
    return None


def test_the_rss_watch_kills_a_process_above_its_limit(tmp_path: Path) -> None:
    guard = ResourceGuard(tmp_path, use_cgroups=False)
    assert guard.enforcement.memory == "rss-watch" and guard.enforcement.cpu == "none"
    assert "CPU limits are NOT enforced" in guard.enforcement.detail
    limit = 80 * MIB
    replica = child(tmp_path, GROWER, memory_limit=limit)
    try:
        code = watch(guard, replica, 20)
        assert code == -signal.SIGKILL, f"exit {code}"
        assert guard.exited(replica) == OOM_KILLED and replica.oom_kills == 1
        peak = replica.peak_rss_bytes or 0
        # 50 MiB/s read every 50 ms: a few MiB past the line, never more than 8.
        assert limit < peak <= limit + 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    finally:
        replica.process.stop(2)  # type: ignore[union-attr]


def test_no_limit_no_kill_and_cpu_is_measured(tmp_path: Path) -> None:
    guard = ResourceGuard(tmp_path, use_cgroups=False)
    grower = child(tmp_path, GROWER)
    spinner = child(tmp_path, SPINNER)
    try:
        deadline = time.monotonic() + 15
        while (grower.rss_bytes or 0) < 160 * MIB and time.monotonic() < deadline:
            guard.tick([grower, spinner])
            time.sleep(0.05)
        assert (grower.rss_bytes or 0) >= 160 * MIB and grower.exit_code() is None
        assert guard.exited(grower) is None
        # A busy loop against one that mostly sleeps: on a shared machine the spinner may get
        # far less than a core, but always far more than the sleeper.
        assert spinner.cpu_percent is not None and grower.cpu_percent is not None
        assert spinner.cpu_percent > max(5.0, 2 * grower.cpu_percent), (
            spinner.cpu_percent,
            grower.cpu_percent,
        )
    finally:
        for replica in (grower, spinner):
            replica.process.stop(2)  # type: ignore[union-attr]


def test_cgroup_v2_files_as_the_kernel_documents_them(tmp_path: Path) -> None:
    """A folder laid out as a cgroup v2 mount (not the kernel): what detection requires and
    what the supervisor writes for a replica's limits."""
    mount = tmp_path / "cgroup"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (mount / "cgroup.subtree_control").write_text("cpu pids\n")
    found, why = CgroupV2.detect(tmp_path / "home", mount=mount)
    assert found is None and "delegates no memory controller" in why
    (mount / "cgroup.subtree_control").write_text("cpu memory pids\n")
    found, why = CgroupV2.detect(tmp_path / "home", mount=mount)
    assert found is not None, why
    assert found.controllers == {"cpu", "memory"}
    assert (found.base.parent / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (found.base / "cgroup.subtree_control").read_text() == "+cpu +memory"
    path = found.create("orders-v5-1234", memory_max=128 * MIB, cpu_millis=500)
    assert (path / "memory.max").read_text() == str(128 * MIB)
    assert (path / "cpu.max").read_text() == "50000 100000"
    assert found.create("orders-v1-1", None, None) / "memory.max"
    assert (found.base / "orders-v1-1" / "memory.max").read_text() == "max"
    assert (found.base / "orders-v1-1" / "cpu.max").read_text() == "max 100000"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert CgroupV2.oom_kills(path) == 1


def _kernel_cgroups(tmp_path: Path) -> CgroupV2:
    found, why = CgroupV2.detect(tmp_path)
    if found is None:
        pytest.skip(f"no kernel memory limits on this machine: {why}")
    return found


def test_the_kernel_kills_a_process_above_memory_max(tmp_path: Path) -> None:
    cgroups = _kernel_cgroups(tmp_path)
    guard = ResourceGuard(tmp_path)
    assert guard.enforcement.memory == "cgroup"
    replica = Replica(
        service="grower",
        version="v1",
        port=1,
        argv=[sys.executable, "-c", GROWER],
        env={},
        log_dir=tmp_path,
        cwd=tmp_path,
        backoff=Backoff(base=0.1, cap=1.0),
        resources=Resources(memory_limit=80 * MIB),
    )
    try:
        replica.start(cgroup=guard.cgroup_for(replica))
        assert replica.cgroup is not None
        code = watch(guard, replica, 20)
        assert code == -signal.SIGKILL
        assert guard.exited(replica) == OOM_KILLED
    finally:
        if replica.process is not None:
            replica.process.stop(2)
        guard.forget(replica)
        cgroups.remove_all()


def test_a_replica_above_its_limit_is_oom_killed_and_restarted(
    new_platform: PlatformFactory,
) -> None:
    """Through the real supervisor: two v1 replicas and one of a leaking version with a
    memory limit, under load through the gateway. The leaking one is killed (OOMKilled),
    restarted with backoff, and its siblings answer throughout."""
    platform: LocalPlatform = new_platform(replicas=2)
    limit = 104 * MIB  # the fake service runs at about 70 MiB
    (platform.home / "versions" / f"{platform.web}-v5.env").write_text(
        f"LEAK_BYTES_PER_REQUEST=1Mi\nLIMITS_MEMORY={limit // MIB}Mi\n"
    )
    runtime = platform.runtime
    runtime.set_version_replicas(platform.web, "v5", 1)

    def leaky() -> list:  # type: ignore[type-arg]
        return [r for r in runtime.replicas(platform.web) if r.version == "v5"]

    wait_until(
        lambda: any(r.state == "ready" for r in leaky()), timeout=30, what="the v5 replica ready"
    )
    with Load(platform.url, platform.api_key, threads=4) as load:
        wait_until(
            lambda: any(
                r.restarts >= 1 and r.last_reason == OOM_KILLED and r.oom_kills >= 1
                for r in leaky()
            ),
            timeout=40,
            what="the leaking replica OOM-killed and restarted",
        )
        killed_at = time.monotonic()
        wait_until(
            lambda: sum(1 for t in load.timings if t[0] > killed_at and t[2] == "v1") >= 20,
            timeout=15,
            what="the v1 siblings answering after the kill",
        )
    replica = leaky()[0]
    # The watch reads RSS every 50 ms from the supervisor's event loop; what the replica
    # leaks between two reads (more when the loop is busy) is the overshoot, as with
    # kubelet's eviction. An unenforced limit would let it grow to the leak's bound.
    assert replica.peak_rss_bytes is not None and replica.peak_rss_bytes <= limit + 32 * MIB, (
        f"peak {replica.peak_rss_bytes / MIB:.1f} MiB over a {limit / MIB:.0f} MiB limit"
    )
    assert replica.memory_limit_bytes == limit
    # The gateway retried what the dying replica held: no user saw a failure.
    assert not load.failures and not load.errors, (load.failures[:5], load.errors[:5])
    assert {t[2] for t in load.timings} >= {"v1", "v5"}

    shown = platform.meshctl("status")
    assert f"({OOM_KILLED})" in shown.stdout and "Mi / 104Mi" in shown.stdout, shown.stdout
    assert "CPU limits are NOT enforced" in shown.stdout or "cpu.max" in shown.stdout
    state = json.loads(platform.meshctl("status", "--json").stdout)
    mine = next(r for r in state["replicas"] if r["version"] == "v5")
    assert mine["last_reason"] == OOM_KILLED and mine["memory_limit_bytes"] == limit
    assert state["limits"]["memory"] == "rss-watch"
    v1 = [r for r in state["replicas"] if r["service"] == platform.web and r["version"] == "v1"]
    assert all(r["rss_bytes"] and r["restarts"] == 0 for r in v1)
    assert State.READY.value in {r["state"] for r in v1}
    assert os.environ.get("PYTEST_CURRENT_TEST")  # ran under pytest, with its timeout
