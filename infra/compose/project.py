"""One compose project as meshctl sees it: its name and files (what ``meshctl up`` recorded
in ``.mesh/compose/state.env``), the docker and Compose CLIs, and its containers as ``docker
inspect`` describes them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.local.versions import VersionError, parse_env_file
from infra.runtime.base import RuntimeFailure

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
TEST_OVERRIDE = REPO_ROOT / "docker-compose.test.yml"
DEFAULT_PROJECT = "mesh"
STATE_FILE = "state.env"

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# Set on the containers of a version started by a rollout (the override files).
VERSION_LABEL = "mesh.demo/version"
OVERRIDE_GLOB = "override-*.yml"
# An override of the infrastructure that meshctl itself puts in place for a while (the
# persistence lesson runs Redis without its named volume with it); every compose call of
# the project reads it while it is there.
INFRA_OVERRIDE = "infra-override.yml"
# What Redis persists with (infra/redis/<mode>.conf; docker-compose.yml reads the same name).
REDIS_PERSISTENCE_VAR = "MESH_REDIS_PERSISTENCE"
REDIS_CONF_MOUNT = "/etc/mesh/redis-persistence.conf"
# The resources of docker-compose.yml's versions, from infra/versions/ (infra.compose.versions).
RESOURCES_FILE = "resources.yml"
APP_PORT = 8080


def succeeds(argv: Sequence[str], timeout: float = 10.0) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a CLI; a failure is one :class:`RuntimeFailure` line naming ``what`` and the last
    line the command wrote on stderr."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise RuntimeFailure(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what}: no answer after {timeout:.0f}s") from None
    if check and done.returncode != 0:
        raise RuntimeFailure(f"{what} failed: {last_line(done.stderr) or done.returncode}")
    return done


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def docker(*args: str, what: str | None = None, timeout: float = 60.0) -> str:
    return run(["docker", *args], what=what or f"docker {args[0]}", timeout=timeout).stdout


def project_version() -> str:
    """The version in pyproject.toml."""
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def image_tag(environ: Mapping[str, str] | None = None) -> str:
    """The tag of the project images: ``MESH_VERSION`` (docker-compose.yml reads the same
    variable) or the project's version."""
    env = os.environ if environ is None else environ
    return env.get("MESH_VERSION", "").strip() or project_version()


# -- containers -----------------------------------------------------------------------------
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _timestamp(raw: str | None) -> float | None:
    if not raw or raw.startswith("0001-"):  # Docker's zero time: never started/finished
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Container:
    """What meshctl needs of one container (a replica, or an infrastructure part)."""

    id: str
    name: str
    compose_service: str
    number: int
    oneoff: bool
    env: dict[str, str]
    labels: dict[str, str]
    ips: tuple[str, ...]
    status: str  # docker's: created, running, restarting, exited, dead, removing, paused
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    exit_code: int
    restarts: int
    restart_policy: str  # "no" for a one-shot job (kafka-init), else unless-stopped...
    pid: int
    started_at: float | None
    image: str
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Where each mount comes from, by its path in the container: a volume's name (``""``
    # for an anonymous one: Docker names those by a hash) or a bind mount's host path.
    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Its limits as the engine applies them (0: none), and whether its last exit was an OOM kill.
    memory_limit: int = 0
    nano_cpus: int = 0
    oom_killed: bool = False

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> Container:
        config, state = data.get("Config") or {}, data.get("State") or {}
        labels = dict(config.get("Labels") or {})
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
        ports: dict[str, tuple[str, int]] = {}
        for port, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items():
            for binding in bindings or []:
                if binding.get("HostPort"):
                    ports.setdefault(port, (binding.get("HostIp") or "", int(binding["HostPort"])))
        mounts: dict[str, tuple[str, str]] = {}
        for mount in data.get("Mounts") or []:
            kind = str(mount.get("Type", ""))
            where = str(mount.get("Name") or "") if kind == "volume" else str(mount.get("Source"))
            mounts[str(mount.get("Destination", ""))] = (kind, where)
        health = state.get("Health")
        host = data.get("HostConfig") or {}
        policy = (host.get("RestartPolicy") or {}).get("Name") or "no"
        return cls(
            id=str(data["Id"]),
            name=str(data["Name"]).lstrip("/"),
            compose_service=labels.get(SERVICE_LABEL, ""),
            number=int(labels.get(NUMBER_LABEL) or 0),
            oneoff=labels.get(ONEOFF_LABEL) == "True",
            env=env,
            labels=labels,
            ips=tuple(n["IPAddress"] for n in networks.values() if n.get("IPAddress")),
            status=str(state.get("Status", "")),
            health=str(health["Status"]) if health else None,
            exit_code=int(state.get("ExitCode") or 0),
            restarts=int(data.get("RestartCount") or 0),
            restart_policy=str(policy),
            pid=int(state.get("Pid") or 0),
            started_at=_timestamp(state.get("StartedAt")),
            image=str(config.get("Image", "")),
            ports=ports,
            mounts=mounts,
            memory_limit=int(host.get("Memory") or 0),
            nano_cpus=int(host.get("NanoCpus") or 0),
            oom_killed=bool(state.get("OOMKilled")),
        )

    @property
    def service(self) -> str | None:
        """The name it registers under in Consul; None for the infrastructure and for jobs
        (kafka-init runs from the gateway image, whose SERVICE_NAME it inherits)."""
        name = self.env.get("SERVICE_NAME")
        if name and self.compose_service in (name, f"{name}-{self.version}"):
            return name
        return None

    @property
    def version(self) -> str:
        return self.labels.get(VERSION_LABEL) or self.env.get("SERVICE_VERSION") or "v1"

    @property
    def port(self) -> int:
        raw = self.env.get("GATEWAY_PORT") or self.env.get("PORT") or str(APP_PORT)
        return int(raw) if raw.isdigit() else APP_PORT

    @property
    def address(self) -> str:
        """Where the replica answers on the project network (what it registers in Consul)."""
        return f"{self.ips[0]}:{self.port}" if self.ips else ""

    @property
    def alive(self) -> bool:
        """Counts as a replica: running, or about to (a restart, a container just created)."""
        return self.status in ("created", "running", "restarting")

    def published(self, port: int) -> str | None:
        """``http://host:port`` where a container port is published on this machine."""
        binding = self.ports.get(f"{port}/tcp")
        if binding is None:
            return None
        host = binding[0] if binding[0] not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{binding[1]}"


# -- the project --------------------------------------------------------------------------
@dataclass
class ComposeProject:
    """``docker-compose -p NAME -f FILE...`` with the environment the files interpolate."""

    name: str
    base_files: tuple[Path, ...]
    env_dir: Path  # the secret env files of gen-env.sh (gateway.env holds the API key)
    state_dir: Path  # meshctl's own files: version overrides, stable versions, rollouts
    environ: dict[str, str]
    cli: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, home: Path, environ: Mapping[str, str]) -> ComposeProject:
        """The project ``meshctl up`` started, from what it recorded in
        ``.mesh/compose/state.env``; without that file, the one it would start."""
        state: dict[str, str] = {}
        state_file = home / "compose" / STATE_FILE
        if state_file.is_file():
            try:
                state = parse_env_file(state_file)
            except (OSError, VersionError) as exc:
                raise RuntimeFailure(f"cannot read {state_file}: {exc}") from None
        name = (
            state.get("COMPOSE_PROJECT")
            or environ.get("MESH_COMPOSE_PROJECT", "").strip()
            or DEFAULT_PROJECT
        )
        files = [COMPOSE_FILE]
        if state.get("COMPOSE_INFRA") == "local":
            files.append(TEST_OVERRIDE)
        raw_env_dir = state.get("COMPOSE_ENV_DIR") or environ.get("MESH_COMPOSE_ENV_DIR", "")
        env_dir = Path(raw_env_dir) if raw_env_dir else home / "compose"
        if not env_dir.is_absolute():
            env_dir = REPO_ROOT / env_dir  # compose resolves it from the repository root
        env = dict(environ)
        if state.get("MESH_VERSION") and not env.get("MESH_VERSION"):
            env["MESH_VERSION"] = state["MESH_VERSION"]  # the tag its images were built with
        if state.get(REDIS_PERSISTENCE_VAR):
            # What Redis runs with (meshctl up, or a switch since): every later compose call
            # must render the same redis service, whatever this shell says.
            env[REDIS_PERSISTENCE_VAR] = state[REDIS_PERSISTENCE_VAR]
        return cls(name, tuple(files), env_dir, home / "compose" / name, env)

    @property
    def label(self) -> str:
        return f"label={PROJECT_LABEL}={self.name}"

    @property
    def resources_path(self) -> Path:
        return self.state_dir / RESOURCES_FILE

    def files(self) -> list[Path]:
        """The base files, the resources of their versions (once ``up`` wrote them), the
        infrastructure's override while meshctl has one in place, and the override of every
        version a rollout started."""
        if not self.state_dir.is_dir():
            return list(self.base_files)
        resources = [self.resources_path] if self.resources_path.is_file() else []
        infra = self.state_dir / INFRA_OVERRIDE
        overrides = sorted(self.state_dir.glob(OVERRIDE_GLOB))
        return [*self.base_files, *resources, *([infra] if infra.is_file() else []), *overrides]

    @property
    def state_file(self) -> Path:
        return self.state_dir.parent / STATE_FILE

    def record(self, key: str, value: str) -> None:
        """Set one line of ``state.env`` (the others stay as ``meshctl up`` wrote them), and
        use the value from now on."""
        lines = self.state_file.read_text().splitlines() if self.state_file.is_file() else []
        kept = [line for line in lines if not line.startswith(f"{key}=")]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text("\n".join([*kept, f"{key}={value}"]) + "\n")
        self.environ[key] = value

    def compose_env(self) -> dict[str, str]:
        env = {**os.environ, **self.environ, "MESH_COMPOSE_ENV_DIR": str(self.env_dir)}
        env["MESH_VERSION"] = image_tag(env)
        return env

    def compose(
        self,
        *args: str,
        what: str | None = None,
        files: Sequence[Path] | None = None,
        timeout: float = 300.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [*self._argv(files), *args],
            what=what or f"compose {' '.join(args[:2])}",
            env=self.compose_env(),
            timeout=timeout,
            check=check,
        )

    def _argv(self, files: Sequence[Path] | None = None) -> list[str]:
        """The compose CLI with this project's name and files."""
        if not self.cli:
            from infra.compose.engine import compose_cli  # asks docker: only when needed

            self.cli = list(compose_cli(self.compose_env()).argv)
        argv = [*self.cli, "-p", self.name]
        for path in self.files() if files is None else files:
            argv += ["-f", str(path)]
        return argv

    def show_logs(self, services: Sequence[str], follow: bool) -> int:
        """``docker-compose logs`` of these compose services, straight to the terminal."""
        argv = [*self._argv(), "logs", "--no-color", "--timestamps"]
        argv += [*(["-f"] if follow else []), *services]
        try:
            return subprocess.call(argv, cwd=REPO_ROOT, env=self.compose_env())
        except KeyboardInterrupt:
            return 130

    def containers(self, *, include_oneoff: bool = False) -> list[Container]:
        ids = docker("ps", "-aq", "--filter", self.label, what="docker ps").split()
        if not ids:
            return []
        # A container removed between the two calls makes inspect fail for it alone.
        done = run(["docker", "inspect", *ids], what="docker inspect", check=False)
        try:
            found = [Container.from_inspect(d) for d in json.loads(done.stdout or "[]")]
        except ValueError:
            raise RuntimeFailure(f"docker inspect failed: {last_line(done.stderr)}") from None
        found = [c for c in found if include_oneoff or not c.oneoff]
        return sorted(found, key=lambda c: (c.compose_service, c.number, c.name))

    def secrets(self) -> dict[str, str]:
        """GATEWAY_API_KEYS and GATEWAY_ADMIN_TOKEN, from the env file meshctl wrote."""
        path = self.env_dir / "gateway.env"
        try:
            return parse_env_file(path)
        except (OSError, VersionError):
            return {}
