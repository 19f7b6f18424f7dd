"""Versions of a service on compose: the one docker-compose.yml declares runs as the compose
service itself (``orders``); any other runs as ``<service>-<version>`` (``orders-v2``),
defined by a generated override file next to meshctl's state:

    .mesh/compose/<project>/override-orders-v2.yml

The definition is the service's own, as ``docker-compose config`` resolves it from the
project's files (so the test override's settings come along), with ``SERVICE_VERSION`` and
the version's ``infra/versions/<service>-<version>.env`` on top: its settings in the
environment, its resources as ``mem_limit``/``mem_reservation``/``cpus`` (not the CPU
request's ``cpu_shares``: see :data:`UNWRITTEN`), and,
for ``READINESS_PROBE=none``, a healthcheck that only checks the port (what a user who wrote
no readiness check gets). Both versions register in
Consul under the same name with their ``Meta.version``, so the gateway serves both and the
weights in Consul KV split the traffic between them. Secrets stay in the env files: values
that came from one are written back as an ``env_file`` reference, never as values.

The versions docker-compose.yml declares get their resources from the same files, through
one more generated file, written by ``meshctl up`` and read before the version overrides:

    .mesh/compose/<project>/resources.yml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.compose.project import VERSION_LABEL, ComposeProject
from infra.local.catalog import Platform
from infra.local.versions import VersionError, parse_env_file, version_env, version_resources
from infra.runtime.base import RuntimeFailure

# Never copied: the image exists already, and a fixed name would collide.
DROPPED_KEYS = ("build", "container_name")
# The keys of Resources.compose(): the version file's, never the copied definition's.
RESOURCE_KEYS = ("mem_limit", "mem_reservation", "cpus", "cpu_shares", "memswap_limit")
# Resources.compose() turns the CPU request into cpu_shares (1024 a core), as kubelet does;
# but on a Docker engine every container without a request (Kafka, Redis, Consul, another
# project's) weighs 1024, so 100m would leave the app a tenth of theirs whenever the CPU is
# busy: measured here under a loaded engine, a replica's start took 22.8 s at 102 shares and
# 5.8 s at 1024 (the gateway failed its healthcheck). Kubernetes gives such containers 2.
UNWRITTEN = ("cpu_shares",)
# READINESS_PROBE=none: the healthcheck a user writes who checks only that the port answers.
PORT_ONLY_CHECK = ["CMD", "python", "/opt/mesh/healthcheck.py", "tcp://127.0.0.1:8080"]


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise RuntimeFailure(
            "rollouts on compose need PyYAML to write the version's override file: "
            "pip install pyyaml (it comes with the dev extra)"
        ) from None
    return yaml


class Versions:
    def __init__(self, project: ComposeProject, platform: Platform) -> None:
        self.project = project
        self.platform = platform
        self._config: dict[str, Any] | None = None

    def override_path(self, service: str, version: str) -> Path:
        return self.project.state_dir / f"override-{service}-{version}.yml"

    def config(self) -> dict[str, Any]:
        """The resolved base files (``docker-compose config``), read once: they do not change
        while meshctl runs."""
        if self._config is None:
            done = self.project.compose(
                "config", files=self.project.base_files, what="docker-compose config", timeout=60
            )
            loaded = _yaml().safe_load(done.stdout)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("services"), dict):
                raise RuntimeFailure("docker-compose config printed no services")
            self._config = loaded
        return self._config

    def definition(self, service: str) -> dict[str, Any]:
        found = self.config()["services"].get(service)
        if not isinstance(found, dict):
            raise RuntimeFailure(f"docker-compose.yml has no service {service!r}")
        return found

    def base_version(self, service: str) -> str:
        """The version the compose files declare for ``service`` (v1)."""
        environment = self.definition(service).get("environment") or {}
        return str(environment.get("SERVICE_VERSION") or "v1")

    def compose_service(self, service: str, version: str) -> str:
        """The compose service that runs ``service`` at ``version``."""
        return service if version == self.base_version(service) else f"{service}-{version}"

    def resources(self, service: str, version: str) -> dict[str, str | int | float]:
        """The compose keys of the version's requests and limits (its file over defaults.env)."""
        try:
            keys = version_resources(self.platform.versions_dir, service, version).compose()
        except (VersionError, OSError) as exc:
            raise RuntimeFailure(str(exc)) from None
        return {k: v for k, v in keys.items() if k not in UNWRITTEN}

    def write_resources(self) -> Path:
        """``resources.yml``: the resources of the versions docker-compose.yml declares, for
        every application service (a limit a version file lifts with ``none`` is written as
        0, docker's "no limit", since an override cannot delete a key)."""
        services: dict[str, dict[str, str | int | float]] = {}
        for name in (s.name for s in self.platform.service):
            if name not in self.config()["services"]:
                continue
            keys = self.resources(name, self.base_version(name))
            services[name] = {"mem_limit": 0, "cpus": 0, **keys}
        header = (
            "# Generated by meshctl up (infra/compose/versions.py): the requests and limits of\n"
            "# infra/versions/ (defaults.env and the version files) for docker-compose.yml's\n"
            "# services. Edit those files, not this one.\n"
        )
        path = self.project.resources_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(header + _yaml().safe_dump({"services": services}, sort_keys=False))
        tmp.replace(path)
        return path

    def ensure(self, service: str, version: str) -> str:
        """The compose service of the version, writing its override file when it needs one."""
        name = self.compose_service(service, version)
        if name == service:
            return name
        try:
            extra = version_env(self.platform.versions_dir, service, version)
        except (VersionError, OSError) as exc:
            raise RuntimeFailure(str(exc)) from None
        dropped = (*DROPPED_KEYS, *RESOURCE_KEYS)
        definition = {k: v for k, v in self.definition(service).items() if k not in dropped}
        definition.update(self.resources(service, version))
        if extra.get("READINESS_PROBE") == "none":
            definition["healthcheck"] = {
                **(definition.get("healthcheck") or {}),
                "test": PORT_ONLY_CHECK,
            }
        environment = {str(k): str(v) for k, v in (definition.get("environment") or {}).items()}
        environment.update(extra)
        environment["SERVICE_VERSION"] = version
        definition["environment"], env_files = self._without_secrets(environment)
        if env_files:
            definition["env_file"] = env_files
        labels = definition.get("labels") or {}
        if isinstance(labels, list):  # the list form: ["key=value", ...]
            labels = dict(str(item).partition("=")[::2] for item in labels)
        definition["labels"] = {**labels, VERSION_LABEL: version}
        header = (
            f"# Generated by meshctl (infra/compose/versions.py): {service} {version} next to\n"
            f"# the {service} of docker-compose.yml, for a rollout. Removed with the version.\n"
        )
        body = _yaml().safe_dump({"services": {name: definition}}, sort_keys=False)
        path = self.override_path(service, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(header + body)
        tmp.chmod(0o600)
        tmp.replace(path)
        return name

    def remove(self, service: str, version: str) -> None:
        """Forget the override of a version that no longer runs."""
        self.override_path(service, version).unlink(missing_ok=True)

    def _without_secrets(self, environment: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """``docker-compose config`` inlines env files; put back the files whose every value
        it inlined, so secrets never land in the override."""
        kept = dict(environment)
        files = []
        for path in sorted(self.project.env_dir.glob("*.env")):
            try:
                values = parse_env_file(path)
            except (OSError, VersionError):
                continue
            if values and all(kept.get(k) == v for k, v in values.items()):
                for key in values:
                    del kept[key]
                files.append(str(path))
        return kept, files
