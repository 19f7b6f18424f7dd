"""The local runtime as a user drives it: ``meshctl up``, status, scale, a killed replica,
one-line errors, and no process left behind — real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from local_support import MESHCTL, LocalPlatform, PlatformFactory, error_line

from infra.process import pid_alive, wait_until
from infra.runtime.kv import MeshKV


def passing(platform: LocalPlatform, name: str) -> int:
    return len(MeshKV(platform.env["CONSUL_HTTP_ADDR"]).passing(name))


def test_status_json_scale_and_a_killed_replica(platform: LocalPlatform) -> None:
    status = platform.meshctl("status", "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    # The DESIGN.md shape, and the additions of the local runtime: every replica, and how
    # their resource limits are enforced here.
    assert set(state) == {"runtime", "gateway", "services", "infra", "replicas", "limits"}
    assert state["runtime"] == "local"
    assert state["gateway"]["url"] == platform.url
    assert state["gateway"]["api_key"] == platform.api_key and len(platform.api_key) >= 16
    assert set(state["infra"]) == {"kafka", "redis", "consul"}
    [web] = state["services"]
    assert {k: web[k] for k in ("name", "replicas", "healthy", "versions")} == {
        "name": platform.web,
        "replicas": 1,
        "healthy": 1,
        "versions": {"v1": 1},
    }
    assert (platform.home / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert (platform.home / "supervisor.json").stat().st_mode & 0o777 == 0o600

    up = platform.meshctl("scale", f"{platform.web}=3")
    assert up.returncode == 0, up.stderr
    assert passing(platform, platform.web) == 3
    down = platform.meshctl("scale", f"{platform.web}=1")
    assert down.returncode == 0, down.stderr
    wait_until(lambda: passing(platform, platform.web) == 1, timeout=10, what="one left")
    # Out of Consul is not out of the supervisor's list: a stopped replica stays there while
    # it drains (longer on a busy machine), and this picks the one that is left.
    wait_until(
        lambda: len(platform.runtime.replicas(platform.web)) == 1,
        timeout=30,
        what="the stopped replicas drained and gone",
    )

    [replica] = platform.runtime.replicas(platform.web)
    assert replica.pid is not None
    platform.runtime.kill_replica(replica.id, "KILL")
    wait_until(lambda: not pid_alive(replica.pid or 0), timeout=5, what="killed")

    def back() -> bool:
        [again] = platform.runtime.replicas(platform.web)
        return again.state == "ready" and again.restarts == 1 and again.pid != replica.pid

    wait_until(back, timeout=20, what="the killed replica restarted and ready")
    assert passing(platform, platform.web) == 1

    again = platform.meshctl("up")
    assert again.returncode == 0 and "already running" in again.stdout


def test_down_leaves_no_process(platform: LocalPlatform) -> None:
    platform.runtime.scale(platform.web, 2)
    platform.runtime.wait_healthy(platform.web, 2, timeout=20)
    pids = platform.recorded_pids()
    assert len(set(pids)) >= 4 and all(pid_alive(p) for p in pids)
    result = platform.meshctl("down")
    assert result.returncode == 0, result.stderr
    assert "supervisor (3 replicas)" in result.stdout
    assert not any(pid_alive(p) for p in pids)
    assert not (platform.home / "supervisor.json").exists()
    status = json.loads(platform.meshctl("status", "--json").stdout)
    assert status["gateway"] is None and status["services"] == []


def test_killed_supervisor_takes_its_replicas_along(platform: LocalPlatform) -> None:
    pids = platform.recorded_pids()
    supervisor = json.loads((platform.home / "supervisor.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=15, what="replicas gone")


def test_ctrl_c_during_up_stops_everything(new_platform: PlatformFactory) -> None:
    platform = new_platform(start=False)
    # A web service that sleeps before serving keeps `up` waiting, where Ctrl-C arrives.
    (platform.home / "versions" / f"{platform.web}-v1.env").write_text("FAKE_STARTUP_DELAY=60\n")
    proc = subprocess.Popen(
        [*MESHCTL, "up"],
        env=platform.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = platform.home / "runtime.json"

    def replicas_started() -> bool:
        return state.exists() and len(json.loads(state.read_text())["pids"]) == 2

    wait_until(replicas_started, timeout=30, what="supervisor and replicas started")
    pids = platform.recorded_pids()
    assert all(pid_alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not any(pid_alive(p) for p in pids)


def test_one_line_errors(platform: LocalPlatform) -> None:
    unknown = platform.meshctl("scale", "nope=2")
    assert unknown.returncode == 1
    assert error_line(unknown).startswith("meshctl: unknown service 'nope' (known: ")
    bad = platform.meshctl("rollout", platform.web, "--version", "2")
    assert bad.returncode == 1
    assert error_line(bad) == "meshctl: version '2' must look like v2 (v and a number)"
    same = platform.meshctl("rollout", platform.web, "--version", "v1")
    assert error_line(same) == f"meshctl: {platform.web} already runs v1"
    no_rollout = platform.meshctl("rollout", "abort", platform.web)
    assert error_line(no_rollout) == f"meshctl: no rollout of {platform.web} in progress"


def test_busy_gateway_port_is_one_line(new_platform: PlatformFactory) -> None:
    platform = new_platform(start=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", platform.gateway_port))
        taken.listen()
        result = platform.meshctl("up")
    assert result.returncode == 1
    assert error_line(result) == (
        f"meshctl: gateway: port {platform.gateway_port} on 127.0.0.1 is already in use "
        "(GATEWAY_PORT); free it or set GATEWAY_PORT to another port"
    )
    assert not (platform.home / "supervisor.json").exists()
    assert not (platform.home / "infra.json").exists()
