"""The host side of the compose runtime on the real engine and the real CLIs of this machine
(``make test-compose``): which Compose, which builder, what a pull says, which ports.

- Compose v2 is preferred to the Compose v1 that Debian installs next to it; v1 warns, and is
  refused on Engine 25+ (there it fails every recreate with KeyError: 'ContainerConfig');
- BuildKit where the CLI drives it: the 20.10 CLI has it built in, CLI 23+ needs buildx;
- a pull from no registry at all is "unreachable" (only then may ``up`` fall back), a pull
  a registry answered with an error is not (a scripted registry on loopback, which the engine
  reaches like any other), and with ``MESH_COMPOSE_INFRA=images`` neither starts anything;
- every published port, Prometheus', Jaeger's and Grafana's too, is checked before a build.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_support import free_port

from infra.compose import engine, images
from infra.compose.stack import ComposeStack
from infra.local.catalog import load_platform, platform_path
from infra.runtime.base import RuntimeFailure

pytestmark = pytest.mark.skipif(
    os.environ.get("MESH_COMPOSE_STACK") != "1",
    reason="needs a Docker engine and Compose v2: run `make test-compose`",
)
V1 = Path("/usr/bin/docker-compose")
CLI_20 = Path("/usr/bin/docker")  # Debian's docker.io: the 20.10 CLI


def test_compose_v2_is_preferred_to_v1() -> None:
    chosen = engine.compose_cli({})
    assert chosen.v2 and chosen.argv[-1] == "compose", chosen


@pytest.mark.skipif(not V1.exists(), reason="Debian's docker-compose (v1) is not installed")
def test_compose_v1_warns_and_is_refused_on_engine_25() -> None:
    said: list[str] = []
    chosen = engine.compose_cli({"MESH_COMPOSE_CLI": str(V1)}, "20.10.24", warn=said.append)
    assert chosen.version.startswith("1.") and not chosen.v2
    assert said and "Compose v1" in said[0] and "install Compose v2" in said[0]
    with pytest.raises(RuntimeFailure, match="ContainerConfig"):
        engine.compose_cli({"MESH_COMPOSE_CLI": str(V1)}, "25.0.3")


def _path_with(tmp_path: Path, docker: Path, monkeypatch: pytest.MonkeyPatch) -> engine.Engine:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(docker)
    monkeypatch.setenv("PATH", str(bin_dir))
    found = engine.engine(str(bin_dir / "docker"))
    assert found is not None
    return found


@pytest.mark.skipif(not CLI_20.exists(), reason="no docker 20.10 CLI here")
def test_buildkit_with_the_cli_that_has_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _path_with(tmp_path, CLI_20, monkeypatch)
    chosen = engine.builder(found, {})
    assert chosen.buildkit and chosen.env() == {"DOCKER_BUILDKIT": "1"}, chosen.why
    assert chosen.flags() == ["--progress=plain"]


def test_the_legacy_builder_only_where_buildkit_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = Path(shutil.which("docker") or "")
    found = _path_with(tmp_path, docker.resolve(), monkeypatch)
    has_buildx = subprocess.run([docker, "buildx", "version"], capture_output=True).returncode == 0
    chosen = engine.builder(found, {})
    if has_buildx or engine.major(found.client) < engine.BUILTIN_BUILDKIT_BEFORE:
        assert chosen.buildkit, chosen.why
    else:
        assert not chosen.buildkit and "buildx" in chosen.why, chosen.why
    assert engine.builder(found, {"DOCKER_BUILDKIT": "0"}).buildkit is False


# -- pulls -----------------------------------------------------------------------------------------
class NoSuchImage(http.server.BaseHTTPRequestHandler):
    """A registry that answers (the v2 API's ping) and knows no image."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v2":
            self._answer(200, b"{}")
        else:
            body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
            self._answer(404, body)

    do_HEAD = do_GET

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoSuchImage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_pull_from_no_registry_is_unreachable_and_fast() -> None:
    started = time.monotonic()
    pulled = images.pull(f"127.0.0.1:{unused_port()}/mesh/nothing:1")
    assert not pulled.ok and pulled.unreachable, pulled
    assert time.monotonic() - started < 20


def test_a_registry_that_answers_no_is_not_unreachable(registry: str) -> None:
    pulled = images.pull(f"{registry}/mesh/nothing:1")
    assert not pulled.ok and not pulled.unreachable, pulled
    assert "manifest unknown" in pulled.message.lower() or "not found" in pulled.message.lower()


def stack_for(tmp_path: Path, **environ: str) -> ComposeStack:
    env = {**os.environ, "MESH_COMPOSE_PROJECT": "meshtesthost", **environ}
    return ComposeStack(tmp_path / "mesh", env, load_platform(platform_path(env)))


def test_the_stand_ins_only_when_no_registry_answers(tmp_path: Path, registry: str) -> None:
    nowhere = f"127.0.0.1:{unused_port()}/mesh/nothing:1"
    auto = stack_for(tmp_path)
    auto._infra_images = lambda: [nowhere]  # type: ignore[method-assign]
    infra, shortfall = auto._choose_infra("auto", print)
    assert infra == "local" and shortfall and "full stack was asked for" in shortfall
    with pytest.raises(RuntimeFailure, match="no registry answers"):
        auto._choose_infra("images", print)
    # A registry that answered: no fallback, whatever the mode.
    auto._infra_images = lambda: [f"{registry}/mesh/nothing:1"]  # type: ignore[method-assign]
    with pytest.raises(RuntimeFailure, match="cannot pull"):
        auto._choose_infra("auto", print)


def test_every_published_port_is_checked(tmp_path: Path) -> None:
    stack = stack_for(tmp_path, PROMETHEUS_PORT=str(free_port()))
    from infra.compose.envfiles import ensure_env_files

    ensure_env_files(stack.env_dir, stack.home)
    project = stack.project("images")
    with socket.socket() as held:
        held.bind(("127.0.0.1", int(stack.environ["PROMETHEUS_PORT"])))
        held.listen()
        with pytest.raises(RuntimeFailure, match=r"\(prometheus\)"):
            stack._check_ports(project, [], print)


def test_a_port_in_use_stops_up_before_any_build(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "mesh"
    env = {
        **os.environ,
        "MESH_HOME": str(home),
        "RUNTIME": "compose",
        "MESH_COMPOSE_INFRA": "local",
        "MESH_COMPOSE_PROJECT": "meshtesthostports",
        "GATEWAY_PORT": str(port),
        "CONSUL_UI_PORT": str(free_port()),
    }
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "infra.meshctl", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"port {port} (gateway)" in done.stderr, done.stderr
    assert list((home / "docker").glob("build-*.log")) == [], "a build ran before the check"
    assert time.monotonic() - started < 60
