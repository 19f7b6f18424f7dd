"""``meshctl up`` / ``down`` on compose (``make up RUNTIME=compose``), in order:

1. a Docker engine (:func:`~infra.compose.engine.ensure_engine`) and Compose v2
   (:func:`~infra.compose.engine.compose_cli`);
2. the secret env files (:mod:`infra.compose.envfiles`);
3. the infrastructure: the pinned images of docker-compose.yml, present or pulled; the local
   stand-ins of docker-compose.test.yml (tansu, Debian's redis-server, the development
   registry) when ``MESH_COMPOSE_INFRA=local`` asks for them, or, with ``auto``
   (the default), when no registry answers at all. Then the result says the full stack was
   not delivered (:class:`~infra.runtime.base.PartialStart`: ``make up`` exits non-zero);
   a registry that answers but fails a pull is an error, never a fallback;
4. every published port free (before any build);
5. the project images (:mod:`infra.compose.images`; FROM ``BASE_IMAGE``, python:3.12-slim by
   default, else the local debootstrap base when no registry answers);
6. ``compose up -d``, then the wait of :mod:`infra.compose.health` and until every replica
   passes its Consul check, so the printed URL answers at once.

Settings (environment): ``MESH_REDIS_PERSISTENCE`` (everysec|always|off, as on the local
runtime: the file of infra/redis/ the redis service starts with), ``MESH_COMPOSE_INFRA``
(auto|images|local), ``MESH_COMPOSE_PROFILES`` (e.g. ``load``), ``MESH_COMPOSE_SCALE``
(``orders=2 payments=2``), ``MESH_COMPOSE_WAIT`` (seconds, 300), ``MESH_COMPOSE_PROJECT``
(mesh), ``MESH_BIND_ADDRESS`` and the ``*_PORT`` variables of docker-compose.yml.
"""

from __future__ import annotations

import errno
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.compose import envfiles, images
from infra.compose.engine import ComposeCli, compose_cli, ensure_engine
from infra.compose.fleet import ComposeFleet
from infra.compose.health import wait_up
from infra.compose.project import (
    COMPOSE_FILE,
    DEFAULT_PROJECT,
    REDIS_PERSISTENCE_VAR,
    STATE_FILE,
    TEST_OVERRIDE,
    ComposeProject,
    image_tag,
    last_line,
)
from infra.compose.versions import Versions
from infra.embedded.persistence import redis_mode
from infra.local.catalog import Platform
from infra.local.versions import VersionError, parse_env_file
from infra.process import StartError
from infra.runtime.base import Progress, RuntimeFailure, quiet

INFRA_MODES = ("auto", "images", "local")
ALL_PROFILES = ("load", "observability")
APP_IMAGES = ("gateway", "orders", "inventory", "payments", "notifications")
DEFAULT_WAIT = 300.0
STAND_IN_NOTE = (
    "the LOCAL STAND-INS run instead (docker-compose.test.yml): tansu for Kafka, Debian's "
    "redis-server, the development registry for Consul; no collector, Jaeger, Prometheus "
    "or Grafana"
)


@dataclass
class UpResult:
    infra: str  # "images" or "local"
    took: float
    urls: list[tuple[str, str]] = field(default_factory=list)
    # Why the full stack that was asked for is not what runs; None when it is.
    shortfall: str | None = None


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeFailure(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise RuntimeFailure(f"{name} must be positive, not {raw!r}")
    return value


def bind_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the engine's port proxy binds: a port whose last connections are in TIME_WAIT
        # (right after `down`) is free to listen on; one that something listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def published_ports(config: Mapping[str, Any], profiles: set[str]) -> list[tuple[str, str, int]]:
    """(compose service, host address, host port) of every port the active services publish,
    from a resolved ``compose config``."""
    found = []
    for name, service in (config.get("services") or {}).items():
        wanted = set(service.get("profiles") or [])
        if wanted and not wanted & profiles:
            continue
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host, published = port.get("host_ip") or "0.0.0.0", port.get("published")
            else:  # the short form, "127.0.0.1:8080:8080"
                parts = str(port).split("/")[0].split(":")
                host = parts[0] if len(parts) == 3 else "0.0.0.0"
                published = parts[-2] if len(parts) >= 2 else None
            if published not in (None, ""):
                found.append((str(name), str(host), int(str(published).split("-")[0])))
    return found


class ComposeStack:
    """The compose project of ``make up RUNTIME=compose`` for one MESH_HOME."""

    def __init__(self, home: Path, environ: Mapping[str, str], platform: Platform) -> None:
        self.home = home
        self.environ = dict(environ)
        self.platform = platform
        self.docker_dir = home / "docker"  # build logs, the compose log, dockerd's files
        self.name = self.environ.get("MESH_COMPOSE_PROJECT", "").strip() or DEFAULT_PROJECT
        raw = self.environ.get("MESH_COMPOSE_ENV_DIR", "").strip()
        env_dir = Path(raw) if raw else home / "compose"
        self.env_dir = env_dir if env_dir.is_absolute() else COMPOSE_FILE.parent / env_dir

    # -- settings ---------------------------------------------------------------------------
    def mode(self) -> str:
        mode = self.environ.get("MESH_COMPOSE_INFRA", "").strip() or "auto"
        if mode not in INFRA_MODES:
            raise RuntimeFailure(
                f"MESH_COMPOSE_INFRA must be one of {', '.join(INFRA_MODES)}, not {mode!r}"
            )
        return mode

    def redis_persistence(self) -> str:
        """The validated MESH_REDIS_PERSISTENCE (everysec by default)."""
        try:
            return redis_mode(self.environ)
        except StartError as exc:
            raise RuntimeFailure(str(exc)) from None

    def profiles(self) -> list[str]:
        return self.environ.get("MESH_COMPOSE_PROFILES", "").split()

    def scale_flags(self) -> list[str]:
        flags = []
        for item in self.environ.get("MESH_COMPOSE_SCALE", "").split():
            service, sep, count = item.partition("=")
            if not sep or not service or not count.isdigit():
                raise RuntimeFailure(f"MESH_COMPOSE_SCALE: expected SERVICE=N, got {item!r}")
            flags += ["--scale", item]
        return flags

    def project(self, infra: str, cli: ComposeCli | None = None) -> ComposeProject:
        files = (COMPOSE_FILE, TEST_OVERRIDE) if infra == "local" else (COMPOSE_FILE,)
        project = ComposeProject(
            self.name, files, self.env_dir, self.home / "compose" / self.name, self.environ
        )
        if cli is not None:
            project.cli = list(cli.argv)
        return project

    # -- up ---------------------------------------------------------------------------------
    def up(self, progress: Progress = quiet) -> UpResult:
        started = time.monotonic()
        mode = self.mode()
        profiles, scale = self.profiles(), self.scale_flags()
        self.environ[REDIS_PERSISTENCE_VAR] = self.redis_persistence()
        wait = _number(self.environ, "MESH_COMPOSE_WAIT", DEFAULT_WAIT)
        engine = ensure_engine(self.docker_dir, progress)
        cli = compose_cli(self.environ, engine.server, warn=progress)
        progress(f"docker engine {engine.server}, {cli}")
        if envfiles.ensure_env_files(self.env_dir, self.home):
            progress(f"wrote the secret env files in {self.env_dir}")

        infra, shortfall = self._choose_infra(mode, progress)
        project = self.project(infra, cli)
        self._check_ports(project, profiles, progress)
        base = self._base_image(progress)
        names = [*APP_IMAGES, *(["locust"] if "load" in profiles else [])]
        if infra == "local":
            names += list(images.STAND_INS)
        images.build(
            names, base=base, state_dir=self.docker_dir, environ=self.environ, progress=progress
        )

        self._write_state(infra, profiles)
        # The limits of infra/versions/, for the versions docker-compose.yml declares.
        Versions(project, self.platform).write_resources()
        label = "the local stand-ins" if infra == "local" else "the pinned infrastructure images"
        progress(f"compose -p {self.name} up, on {label}")
        self.docker_dir.mkdir(parents=True, exist_ok=True)
        log = self.docker_dir / "compose-up.log"
        done = project.compose(
            *(a for p in profiles for a in ("--profile", p)),
            "up", "-d", "--no-build", "--remove-orphans", *scale,
            what="compose up", timeout=wait + 300, check=False,
        )  # fmt: skip
        log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeFailure(f"compose up failed: {last_line(done.stderr)} (log: {log})")
        progress(f"waiting until every container is up (at most {wait:.0f}s)")
        wait_up(project, wait, progress)
        self._wait_consul(project, started + wait, progress)
        took = time.monotonic() - started
        progress(f"all healthy and passing in Consul after {took:.0f}s")
        return UpResult(infra, took, self._urls(project, infra, profiles), shortfall)

    def _choose_infra(self, mode: str, progress: Progress) -> tuple[str, str | None]:
        if mode == "local":
            progress("infrastructure: the local stand-ins (MESH_COMPOSE_INFRA=local)")
            return "local", None
        wanted = self._infra_images()
        missing = [image for image in wanted if not images.image_exists(image)]
        for image in missing:
            progress(f"pulling {image}")
            pulled = images.pull(image, progress)
            if pulled.ok:
                continue
            if not pulled.unreachable:
                # A registry answered: a wrong tag, a login, a quota. Say it, start nothing.
                raise RuntimeFailure(f"cannot pull {image}: {pulled.message}")
            if mode == "images":
                raise RuntimeFailure(
                    f"cannot pull {image}: no registry answers ({pulled.message}); "
                    "MESH_COMPOSE_INFRA=local runs the local stand-ins instead"
                )
            why = f"no registry answers ({pulled.message})"
            bar = "!" * 78
            progress(f"{bar}\nNOTE: {why}:\n{STAND_IN_NOTE}.\n{bar}")
            return "local", (
                f"the full stack was asked for (MESH_COMPOSE_INFRA=auto) but {why}, so "
                "the local stand-ins run: no tracing, no dashboards "
                "(MESH_COMPOSE_INFRA=local asks for them)"
            )
        return "images", None

    def _infra_images(self) -> list[str]:
        """The third-party images of docker-compose.yml (literal names: no interpolation)."""
        config = yaml.safe_load(COMPOSE_FILE.read_text())
        found = {
            str(s["image"])
            for s in config["services"].values()
            if s.get("image") and not str(s["image"]).startswith(f"{images.PREFIX}/")
            and not s.get("profiles")
        }  # fmt: skip
        return sorted(found)

    def _base_image(self, progress: Progress) -> str:
        base = self.environ.get("BASE_IMAGE", "").strip() or images.DEFAULT_BASE
        if base == "local" or images.image_exists(base):
            return base
        progress(f"pulling {base}")
        pulled = images.pull(base, progress)
        if pulled.ok:
            return base
        if pulled.unreachable:
            progress(f"{base} cannot be pulled (no registry answers): FROM the local base")
            return "local"
        raise RuntimeFailure(f"cannot pull {base}: {pulled.message}")

    def _check_ports(
        self, project: ComposeProject, profiles: list[str], progress: Progress
    ) -> None:
        """Every published port free, or held by this project already: before any build."""
        done = project.compose(
            *(a for p in profiles for a in ("--profile", p)), "config",
            what="compose config", timeout=60,
        )  # fmt: skip
        config = yaml.safe_load(done.stdout) or {}
        held = {port for c in project.containers() for port in c.ports.values()}
        held_ports = {port for _, port in held}
        busy = [
            f"{port} ({service}) on {host}"
            for service, host, port in published_ports(config, set(profiles))
            if port not in held_ports and not bind_free(host, port)
        ]
        if busy:
            raise RuntimeFailure(
                f"port {busy[0]} is in use"
                + (f" (and {', '.join(busy[1:])})" if busy[1:] else "")
                + ": stop what holds it or set its *_PORT variable (see docker-compose.yml)"
            )
        progress(f"published ports free: {len(published_ports(config, set(profiles)))}")

    def _write_state(self, infra: str, profiles: list[str]) -> None:
        path = self.home / "compose" / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# Written by meshctl up (infra/compose/stack.py); read by every meshctl command.\n"
            f"COMPOSE_PROJECT={self.name}\nCOMPOSE_INFRA={infra}\n"
            f"COMPOSE_ENV_DIR={self.env_dir}\nCOMPOSE_PROFILES={' '.join(profiles)}\n"
            f"MESH_VERSION={image_tag(self.environ)}\n"
            f"{REDIS_PERSISTENCE_VAR}={self.redis_persistence()}\n"
        )

    def _wait_consul(self, project: ComposeProject, deadline: float, progress: Progress) -> None:
        """Until every replica passes its Consul check (the gateway routes only to those)."""
        fleet = ComposeFleet(project, self.platform)
        said = ""
        while True:
            containers = project.containers()
            passing = fleet.consul_passing(containers) or {}
            waiting = sorted(
                {
                    c.service
                    for c in containers
                    if c.service and c.status == "running" and not passing.get(c.address)
                }
            )
            if not waiting:
                return
            line = f"waiting for Consul checks: {', '.join(waiting)}"
            if line != said:
                progress(line)
                said = line
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"not passing in Consul in time: {', '.join(waiting)}")
            time.sleep(0.5)

    def _urls(
        self, project: ComposeProject, infra: str, profiles: list[str]
    ) -> list[tuple[str, str]]:
        by_service = {c.compose_service: c for c in project.containers()}

        def url(service: str, port: int, path: str = "") -> str | None:
            c = by_service.get(service)
            published = c.published(port) if c is not None else None
            return published + path if published else None

        grafana = ""
        try:
            grafana = parse_env_file(self.env_dir / "grafana.env").get(
                "GF_SECURITY_ADMIN_PASSWORD", ""
            )
        except (OSError, VersionError):
            pass
        rows = [
            ("Consul UI", url("consul", 8500, "/ui")),
            ("Prometheus", url("prometheus", 9090)),
            ("Jaeger", url("jaeger", 16686)),
            ("Grafana", url("grafana", 3000)),
            ("Locust", url("locust-master", 8089)),
        ]
        out = [(name, found) for name, found in rows if found]
        if by_service.get("grafana") is not None and grafana:
            out = [(n, f"{u}   admin / {grafana}" if n == "Grafana" else u) for n, u in out]
        if infra == "local":
            out.append(("tracing", "off with the local stand-ins (spans in /tmp/traces)"))
        if "load" not in profiles:
            out.append(("Locust", "off (MESH_COMPOSE_PROFILES=load starts it)"))
        return out

    # -- down -------------------------------------------------------------------------------
    def down(self, progress: Progress = quiet, *, volumes: bool = False) -> int:
        """Stop and remove the project's containers (and, with ``volumes``, its volumes);
        how many containers there were."""
        project = ComposeProject.from_state(self.home, self.environ)
        from infra.compose.engine import engine

        if engine() is None:
            progress("no docker engine answers: nothing of the compose runtime can be running")
            return 0
        count = len(project.containers())
        with tempfile.TemporaryDirectory() as placeholder:
            if not all((project.env_dir / f).is_file() for f in envfiles.FILES):
                # `down` parses the files, which name the env files: stand-ins will do.
                envfiles.placeholder_env_files(Path(placeholder))
                project.env_dir = Path(placeholder)
            progress(f"compose -p {project.name} down" + (" (volumes too)" if volumes else ""))
            project.compose(
                *(a for p in ALL_PROFILES for a in ("--profile", p)),
                "down", "--remove-orphans", *(["-v"] if volumes else []),
                what="compose down", timeout=300,
            )  # fmt: skip
        left = project.containers()
        if left:
            raise RuntimeFailure(
                f"containers of {project.name} are still there: {', '.join(c.name for c in left)}"
            )
        if volumes:
            (self.home / "compose" / STATE_FILE).unlink(missing_ok=True)
        return count
