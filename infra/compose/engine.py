"""The host side of the compose runtime, in Python so it runs wherever meshctl runs (a Mac
has no ``timeout``, bash 3.2 has no ``mapfile``): the Docker engine, the Compose CLI to use,
and the builder.

- :func:`ensure_engine`: an engine that answers ``docker info``; as root on Debian/Ubuntu one
  is installed (``docker.io``) and ``dockerd`` started when none answers.
- :func:`compose_cli`: Compose v2 first (the ``docker compose`` plugin, then a
  ``docker-compose`` that reports v2); Compose v1 only with a warning, and refused on Docker
  Engine 25 or newer, where it fails on every recreate (``KeyError: 'ContainerConfig'``).
- :func:`builder`: BuildKit where the docker CLI can drive it, else the legacy builder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.runtime.base import Progress, RuntimeFailure, quiet

DOCKER_INFO_TIMEOUT = 15.0
DOCKERD_WAIT = 90.0
# Compose v1 recreates containers through an image field that Engine 25 removed.
V1_LAST_ENGINE = 24
# The CLI that has BuildKit built in; from 23 on `docker build` needs the buildx plugin.
BUILTIN_BUILDKIT_BEFORE = 23


def docker_path() -> str:
    found = shutil.which("docker")
    if found is None:
        raise RuntimeFailure(
            "docker is not installed: install Docker Desktop or Docker Engine 24+ with the "
            "Compose v2 plugin (https://docs.docker.com/engine/install/)"
        )
    return found


def capture(argv: list[str], timeout: float = 10.0, env: Mapping[str, str] | None = None) -> str:
    """stdout of a command that worked, else ""."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def major(version: str) -> int:
    """``20.10.24+dfsg1`` -> 20, ``v2.40.3`` -> 2; 0 when unreadable."""
    found = re.match(r"v?(\d+)", version.strip())
    return int(found.group(1)) if found else 0


# -- the engine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    server: str  # the engine's version, e.g. 20.10.24
    client: str  # the docker CLI's
    os: str  # the engine's OS ("linux" also for Docker Desktop)


def engine(docker: str | None = None) -> Engine | None:
    """The engine that answers, or None (fast: one ``docker version`` with a timeout)."""
    docker = docker or shutil.which("docker")
    if docker is None:
        return None
    out = capture(
        [docker, "version", "--format", "{{.Server.Version}}|{{.Client.Version}}|{{.Server.Os}}"],
        timeout=DOCKER_INFO_TIMEOUT,
    )
    parts = out.split("|")
    if len(parts) != 3 or not parts[0]:
        return None
    return Engine(server=parts[0], client=parts[1], os=parts[2])


def ensure_engine(state_dir: Path, progress: Progress = quiet, *, start: bool = True) -> Engine:
    """An engine that answers. As root on a Debian-like host, install and start one."""
    found = engine()
    if found is not None:
        return found
    if not start:
        raise RuntimeFailure("no Docker engine answers (start Docker Desktop or dockerd)")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeFailure(
            "no Docker engine answers: start Docker Desktop, or the docker service "
            "(sudo systemctl start docker), then run this again"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        progress("installing docker.io (apt-get)")
        _apt_install(["docker.io", "iptables"], state_dir / "apt.log")
    if shutil.which("dockerd") is None:
        raise RuntimeFailure("dockerd is still missing after installing docker.io")
    log = state_dir / "dockerd.log"
    progress(f"starting dockerd (log: {log})")
    started = time.monotonic()
    for args in ([], ["--iptables=false", "--ip-masq=false"]):
        # Kernels or sandboxes without netfilter refuse the bridge's NAT rules; without them
        # containers still reach each other and published ports still work.
        if _start_dockerd(args, log, state_dir / "dockerd.pid"):
            found = engine()
            if found is not None:
                progress(f"dockerd answers after {time.monotonic() - started:.0f}s")
                return found
        progress("dockerd did not come up; retrying without iptables")
    raise RuntimeFailure(f"dockerd did not answer within {DOCKERD_WAIT:.0f}s: {_last_error(log)}")


def _apt_install(packages: list[str], log: Path) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(log, "a") as out:
        subprocess.run(["apt-get", "update", "-qq"], stdout=out, stderr=out, env=env, check=False)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            stdout=out,
            stderr=out,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise RuntimeFailure(
            f"apt-get install {' '.join(packages)} failed: {lines[-1] if lines else ''}"
        )


def _start_dockerd(args: list[str], log: Path, pidfile: Path) -> bool:
    with open(log, "w") as out:
        # A session of its own and no inherited pipes: the daemon outlives meshctl and never
        # holds a caller's output open.
        child = subprocess.Popen(
            ["dockerd", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pidfile.write_text(str(child.pid))
    deadline = time.monotonic() + DOCKERD_WAIT
    while time.monotonic() < deadline:
        if engine() is not None:
            return True
        if child.poll() is not None:
            pidfile.unlink(missing_ok=True)
            return False
        time.sleep(0.5)
    child.terminate()
    pidfile.unlink(missing_ok=True)
    return False


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line for line in lines if re.search(r"level=(error|fatal)|failed", line, re.I)]
    return (errors or lines or ["no error logged"])[-1][:300]


def stop_started_engine(state_dir: Path) -> bool:
    """Stop the dockerd :func:`ensure_engine` started (its pid file), and nothing else."""
    pidfile = state_dir / "dockerd.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return False
    import psutil  # only here: the host path above needs nothing but the standard library

    try:
        process = psutil.Process(pid)
        if process.name() != "dockerd":
            raise psutil.NoSuchProcess(pid)
        process.terminate()
        process.wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    pidfile.unlink(missing_ok=True)
    return True


# -- Compose ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComposeCli:
    argv: tuple[str, ...]
    version: str

    @property
    def v2(self) -> bool:
        return major(self.version) >= 2

    def __str__(self) -> str:
        return f"{' '.join(Path(a).name for a in self.argv)} {self.version}"


def _compose_version(argv: list[str], environ: Mapping[str, str]) -> str:
    # The environment matters: DOCKER_CONFIG says where the CLI plugins are.
    return capture([*argv, "version", "--short"], env=environ).lstrip("v")


def compose_cli(
    environ: Mapping[str, str] | None = None,
    engine_version: str | None = None,
    warn: Progress = quiet,
) -> ComposeCli:
    """Compose v2 if there is one; v1 only with a warning, never on Engine 25+.

    ``MESH_COMPOSE_CLI`` names the command to use (``docker-compose``, ``docker compose``);
    the same rules apply to it."""
    env = os.environ if environ is None else environ
    candidates: list[list[str]] = []
    wanted = env.get("MESH_COMPOSE_CLI", "").split()
    if wanted:
        path = shutil.which(wanted[0])
        if path is None:
            raise RuntimeFailure(f"MESH_COMPOSE_CLI={' '.join(wanted)!r}: {wanted[0]} not found")
        candidates.append([path, *wanted[1:]])
    else:
        docker = shutil.which("docker")
        if docker:
            candidates.append([docker, "compose"])
        standalone = shutil.which("docker-compose")
        if standalone:
            candidates.append([standalone])
    found = [(argv, _compose_version(argv, {**os.environ, **env})) for argv in candidates]
    found = [(argv, version) for argv, version in found if version]
    for argv, version in found:
        if major(version) >= 2:
            return ComposeCli(tuple(argv), version)
    if not found:
        raise RuntimeFailure(
            "Compose v2 is not installed: Docker Desktop has it; on Linux install the "
            "docker-compose-plugin package (https://docs.docker.com/compose/install/linux/)"
        )
    argv, version = found[0]
    engine_version = engine_version if engine_version is not None else _engine_version()
    if major(engine_version) > V1_LAST_ENGINE:
        raise RuntimeFailure(
            f"docker-compose {version} is Compose v1, which fails on Docker Engine "
            f"{engine_version} (KeyError: 'ContainerConfig' at every recreate): install "
            "Compose v2 (https://docs.docker.com/compose/install/)"
        )
    warn(
        f"WARNING: docker-compose {version} is Compose v1 (end of life since 2023); it works "
        f"with this Engine {engine_version or '?'} but not with Engine 25+: install Compose v2"
    )
    return ComposeCli(tuple(argv), version)


def _engine_version() -> str:
    found = engine()
    return found.server if found else ""


# -- the builder --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Builder:
    buildkit: bool
    why: str

    def env(self) -> dict[str, str]:
        return {"DOCKER_BUILDKIT": "1" if self.buildkit else "0"}

    def flags(self) -> list[str]:
        # BuildKit's plain progress is what a log file can hold; the legacy builder has one.
        return ["--progress=plain"] if self.buildkit else []


def builder(found: Engine, environ: Mapping[str, str] | None = None) -> Builder:
    """BuildKit when the CLI can drive it: the buildx plugin, or the BuildKit client built
    into docker CLIs before 23 (their daemon has it from 18.09). ``DOCKER_BUILDKIT`` set by the
    user wins."""
    env = os.environ if environ is None else environ
    forced = env.get("DOCKER_BUILDKIT", "").strip()
    if forced in ("0", "1"):
        return Builder(forced == "1", f"DOCKER_BUILDKIT={forced}")
    docker = docker_path()
    if capture([docker, "buildx", "version"]):
        return Builder(True, "BuildKit (buildx)")
    if major(found.client) < BUILTIN_BUILDKIT_BEFORE and found.os == "linux":
        return Builder(True, f"BuildKit (built into docker CLI {found.client})")
    return Builder(
        False,
        f"legacy builder: docker CLI {found.client} drives BuildKit only through the buildx "
        "plugin, which is not installed",
    )
