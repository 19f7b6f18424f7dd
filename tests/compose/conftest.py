"""One compose stack for the whole ``make test-compose`` session, started the way a user starts
it: ``meshctl up`` with ``RUNTIME=compose``, and a PATH that holds only ``docker`` (its
Compose v2 plugin comes with ``DOCKER_CONFIG``) and the project's venv: no ``timeout``, no
GNU tools, no bash builtins of bash 4. The stack tests, meshctl's adapter tests and the drills
all run on it; the last test stops it with ``meshctl down`` under the same PATH.

Only with ``MESH_COMPOSE_STACK=1`` (``tests/compose/run.py`` sets it after it has an engine,
Compose v2 and the images); without it the stack tests skip and ``make test`` needs no Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from compose_support import ComposeProject, Gateway, free_port

from infra.compose.project import COMPOSE_FILE, TEST_OVERRIDE
from infra.compose.project import ComposeProject as Project
from infra.compose.runtime import ComposeRuntime
from infra.local.versions import parse_env_file

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
# Modules in the order a user would go: the stack, meshctl on it, the drills, then down.
ORDER = (
    "test_compose_file",
    "test_compose_rollouts",
    "test_compose_host",
    "test_compose_wait",
    "test_compose_stack",
    "test_compose_runtime",
    "test_compose_drills",
    "test_compose_lessons",
    "test_compose_console",
    "test_compose_meshctl",
)
PORTS = (
    "GATEWAY_PORT",
    "CONSUL_UI_PORT",
    "PROMETHEUS_PORT",
    "JAEGER_UI_PORT",
    "GRAFANA_PORT",
    "LOCUST_PORT",
    "OTEL_HEALTH_PORT",
    "JAEGER_HEALTH_PORT",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__ if item.module is not None else ""
        return ORDER.index(name) if name in ORDER else len(ORDER)

    items.sort(key=rank)  # stable: the order inside a module stays


def only_docker_path(directory: Path) -> str:
    """A PATH of ``docker`` alone (a link to the real one) and the venv's bin."""
    directory.mkdir(parents=True, exist_ok=True)
    docker = shutil.which("docker")
    assert docker, "docker is not on PATH"
    link = directory / "docker"
    if not link.exists():
        link.symlink_to(docker)
    return f"{directory}{os.pathsep}{Path(sys.executable).parent}"


@dataclass
class MeshctlStack:
    """The session's stack and what the tests need to reach it."""

    home: Path
    env: dict[str, str]  # the environment of every meshctl command: the short PATH
    project: ComposeProject  # the same project for the compose CLI, as the tests use it
    runtime: ComposeRuntime
    gateway: Gateway
    gateway_port: int
    consul_port: int
    up: subprocess.CompletedProcess[str]
    up_seconds: float

    @property
    def environ(self) -> dict[str, str]:
        return self.env

    @property
    def consul_url(self) -> str:
        return f"http://127.0.0.1:{self.consul_port}"

    def meshctl(
        self, *args: str, timeout: float = 300, env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return meshctl({**self.env, **(env_extra or {})}, *args, timeout=timeout)


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def stack_env(home: Path, bin_dir: Path) -> dict[str, str]:
    keep = (
        "HOME",
        "LANG",
        "TMPDIR",
        "DOCKER_CONFIG",
        "DOCKER_HOST",
        "MESH_VERSION",
        "MESH_COMPOSE_CLI",
    )
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        PATH=only_docker_path(bin_dir),
        MESH_HOME=str(home),
        RUNTIME="compose",
        # The v1 run asks for the full stack (auto): with no registry it must say it did not
        # deliver it; everywhere else the stand-ins are asked for.
        MESH_COMPOSE_INFRA=os.environ.get("MESH_TEST_INFRA", "local"),
        MESH_COMPOSE_PROJECT=os.environ.get("MESH_COMPOSE_PROJECT", "meshtest"),
        LOG_LEVEL="INFO",
    )
    env.update({name: str(free_port()) for name in PORTS})
    return env


@pytest.fixture(scope="session")
def meshctl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshctlStack]:
    if os.environ.get("MESH_COMPOSE_STACK") != "1":
        pytest.skip("needs a Docker engine and the images: run `make test-compose`")
    root = tmp_path_factory.mktemp("meshctl-compose")
    home = root / "mesh"
    env = stack_env(home, root / "bin")
    meshctl(env, "down")  # an aborted earlier run of the same project name
    started = time.monotonic()
    up = meshctl(env, "up", timeout=900)
    up_seconds = time.monotonic() - started
    shortfall = "the full stack was asked for (MESH_COMPOSE_INFRA=auto) but no registry answers"
    partial = env["MESH_COMPOSE_INFRA"] == "auto" and shortfall in up.stderr
    # Running on the stand-ins when the full stack was asked for: up says so, and fails.
    if up.returncode != (1 if partial else 0):
        meshctl(env, "down", "--volumes")  # a failed up leaves nothing behind either
        pytest.fail(f"meshctl up failed:\n{up.stdout[-2000:]}\n{up.stderr[-4000:]}")
    print(f"\nmeshctl up (compose, short PATH): {up_seconds:.1f}s")
    secrets = parse_env_file(home / "compose" / "gateway.env")
    compose_env = {
        "MESH_COMPOSE_ENV_DIR": str(home / "compose"),
        **{k: env[k] for k in (*PORTS, "MESH_VERSION") if k in env},
    }
    state = Project.from_state(home, env)
    project = ComposeProject(state.name, (COMPOSE_FILE, TEST_OVERRIDE), compose_env)
    gateway_port, consul_port = int(env["GATEWAY_PORT"]), int(env["CONSUL_UI_PORT"])
    stack = MeshctlStack(
        home=home,
        env=env,
        project=project,
        runtime=ComposeRuntime(home, env),
        gateway=Gateway(
            f"http://127.0.0.1:{gateway_port}", secrets["GATEWAY_API_KEYS"].split(",")[0]
        ),
        gateway_port=gateway_port,
        consul_port=consul_port,
        up=up,
        up_seconds=up_seconds,
    )
    try:
        yield stack
    finally:
        # The down test normally did this; whatever happened, leave nothing behind.
        if project.container_ids():
            save_logs(stack)
            meshctl({**env, "MESH_COMPOSE_DOWN_VOLUMES": "1"}, "down")
        project.compose("down", "-v", "--remove-orphans", check=False, timeout=300)


def save_logs(stack: MeshctlStack) -> Path:
    logs_file = Path(os.environ.get("MESH_COMPOSE_LOGS") or stack.home.parent / "compose-logs.txt")
    # Every version's containers: the overrides of the versions rollouts started too.
    files = stack.runtime.project.files()
    project = ComposeProject(stack.project.name, files, stack.project.env, stack.project.cli)
    done = project.compose("logs", "--no-color", "--timestamps", check=False, timeout=120)
    logs_file.parent.mkdir(parents=True, exist_ok=True)
    logs_file.write_text(done.stdout + done.stderr)
    print(f"\ncompose logs: {logs_file}")
    return logs_file
