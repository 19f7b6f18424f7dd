"""``meshctl up`` / ``down`` for compose as a user runs them, with nothing on PATH but
``docker`` (its Compose plugin found through ``DOCKER_CONFIG``) and the project's venv: the
host path needs no ``timeout``, no ``mapfile``, no GNU tool and no bash at all (a stock Mac
has none of the first three, and bash 3.2). The stack is the session's (``conftest.py``); the
last test here stops it and checks nothing of the project is left.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import MeshctlStack, save_logs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]


def test_up_ran_with_only_docker_on_the_path(meshctl_stack: MeshctlStack) -> None:
    path = meshctl_stack.env["PATH"].split(os.pathsep)
    for tool in ("timeout", "bash", "sh", "awk", "sed", "xargs", "docker-compose"):
        assert shutil.which(tool, path=os.pathsep.join(path)) is None, f"{tool} on the PATH"
    assert sorted(p.name for p in Path(path[0]).iterdir()) == ["docker"]
    said = meshctl_stack.up.stdout + meshctl_stack.up.stderr
    wanted_v1 = "docker-compose" in os.environ.get("MESH_COMPOSE_CLI", "")
    if wanted_v1:
        assert "is Compose v1" in said and "WARNING" in said, said[-1500:]
    else:
        assert "docker compose 2." in said, said[-1500:]
    assert "published ports free" in said
    assert "all healthy and passing in Consul" in said
    assert f"gateway   http://127.0.0.1:{meshctl_stack.gateway_port}" in said


def test_status_and_autoscale_status_from_the_cli(meshctl_stack: MeshctlStack) -> None:
    done = meshctl_stack.meshctl("status", "--json")
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["runtime"] == "compose"
    assert state["gateway"]["url"] == f"http://127.0.0.1:{meshctl_stack.gateway_port}"
    assert all(part["healthy"] for part in state["infra"].values()), state["infra"]
    done = meshctl_stack.meshctl("autoscale", "status")
    assert done.returncode == 0 and "autoscaler: off" in done.stdout, done.stderr


def test_up_again_says_it_runs(meshctl_stack: MeshctlStack) -> None:
    done = meshctl_stack.meshctl("up")
    assert done.returncode == 0, done.stderr
    assert "already running" in done.stdout


def test_down_leaves_nothing(meshctl_stack: MeshctlStack) -> None:
    save_logs(meshctl_stack)
    done = meshctl_stack.meshctl("down", timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped: compose project" in done.stdout
    left = meshctl_stack.project.leftovers()
    assert set(left) <= {"volumes"}, f"meshctl down left {left}"  # volumes stay: make clean
    done = meshctl_stack.meshctl("down", env_extra={"MESH_COMPOSE_DOWN_VOLUMES": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert meshctl_stack.project.leftovers() == {}
    status = meshctl_stack.meshctl("status")
    assert "platform: not running" in status.stdout, status.stdout
