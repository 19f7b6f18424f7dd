"""``meshctl infra`` and ``meshctl up/down`` as a user runs them: real processes, real exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.process import free_port, pid_alive, wait_until

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
INFRA_VARS = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")


def meshctl_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INFRA_VARS}
    # Never the developer's 8080: `up` checks the gateway's port before anything else.
    env.update(
        {
            "MESH_HOME": str(home),
            "MESH_EXTERNAL_TIMEOUT": "1",
            "GATEWAY_PORT": str(free_port()),
            **extra,
        }
    )
    return env


def meshctl(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args],
        env=meshctl_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says what went wrong: the only ``meshctl:`` line, and the last."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("meshctl: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


def recorded_pids(home: Path) -> list[int]:
    state = json.loads((home / "infra.json").read_text())
    return [p["pid"] for p in state["parts"].values() if p["pid"]]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Whatever a test left running is stopped, so a failing test leaves no orphan.
    meshctl(tmp_path, "infra", "down")


def test_up_status_down_leaves_no_process(home: Path) -> None:
    up = meshctl(home, "infra", "up", "--json")
    assert up.returncode == 0, up.stderr
    parts = {p["name"]: p for p in json.loads(up.stdout)["infra"]}
    assert set(parts) == {"kafka", "redis", "consul"}
    assert all(p["healthy"] and p["state"] == "running" for p in parts.values())
    assert parts["kafka"]["source"] == "bundled"
    assert parts["consul"]["source"] in ("development registry", "PATH")
    pids = recorded_pids(home)
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)

    again = meshctl(home, "infra", "up")
    assert again.returncode == 0 and "already running" in again.stdout
    assert recorded_pids(home) == pids

    table = meshctl(home, "status")
    assert table.returncode == 0
    for name in ("kafka", "redis", "consul"):
        assert name in table.stdout

    down = meshctl(home, "infra", "down")
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="parts gone")
    assert not (home / "infra.json").exists()
    status = meshctl(home, "infra", "status", "--json")
    assert status.returncode == 1
    assert {p["state"] for p in json.loads(status.stdout)["infra"]} == {"stopped"}


def test_status_json_has_the_design_shape(home: Path) -> None:
    # Infra alone: the platform's gateway and services are absent (tests/local runs them).
    assert meshctl(home, "infra", "up").returncode == 0
    status = meshctl(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["runtime"] == "local"
    assert set(state) == {"runtime", "gateway", "services", "infra"}
    assert state["gateway"] is None and state["services"] == []
    assert set(state["infra"]) == {"kafka", "redis", "consul"}
    assert all(part["healthy"] for part in state["infra"].values())
    assert meshctl(home, "down").returncode == 0
    assert not (home / "infra.json").exists()


def test_ctrl_c_during_up_leaves_no_process(home: Path) -> None:
    # A Consul that never answers holds `up` in its wait, where Ctrl-C arrives.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        proc = subprocess.Popen(
            [*MESHCTL, "infra", "up"],
            env=meshctl_env(
                home,
                CONSUL_HTTP_ADDR=f"127.0.0.1:{silent.getsockname()[1]}",
                MESH_EXTERNAL_TIMEOUT="60",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        state = home / "infra.json"
        wait_until(
            lambda: state.exists() and len(json.loads(state.read_text())["parts"]) == 2,
            timeout=30,
            what="kafka and redis started",
        )
        pids = recorded_pids(home)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        silent.close()
    assert proc.returncode == 130
    assert "interrupted" in err
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="parts gone")
    assert not state.exists()


def test_killed_owner_takes_its_children_along(tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no orphan: children die with their parent."""
    script = (
        "import sys, pathlib; from infra.embedded import Infra; "
        "Infra(pathlib.Path(sys.argv[1])).up(); print('up', flush=True); sys.stdin.read()"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        env=meshctl_env(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
    pids = recorded_pids(tmp_path)
    assert all(pid_alive(p) for p in pids)
    owner.kill()
    owner.wait(timeout=10)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="children gone")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"RUNTIME": "swarm"}, "unknown RUNTIME='swarm'"),
        ({"MESH_REDIS_BIN": "/nonexistent/redis-server"}, "is not an executable file"),
        ({"MESH_KAFKA_PORT": "not-a-port"}, "MESH_KAFKA_PORT='not-a-port' is not a TCP port"),
    ],
)
def test_bad_input_is_one_clear_line(home: Path, extra: dict[str, str], expected: str) -> None:
    result = meshctl(home, "up", **extra)
    assert result.returncode == 1
    assert expected in error_line(result)
    assert not (home / "infra.json").exists()


def test_port_in_use_is_refused(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = meshctl(home, "infra", "up", MESH_REDIS_PORT=str(port))
    assert result.returncode == 1
    assert error_line(result) == (
        f"meshctl: redis: port {port} on 127.0.0.1 is already in use (MESH_REDIS_PORT); "
        "free it or pick another port"
    )
    assert not (home / "infra.json").exists()


def test_unreachable_kafka_is_one_clear_line(home: Path) -> None:
    closed = free_port()
    result = meshctl(home, "infra", "up", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed}")
    assert result.returncode == 1
    assert error_line(result) == (
        f"meshctl: kafka: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{closed} does not answer "
        "(ApiVersions failed for 1s)"
    )
