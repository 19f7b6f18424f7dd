"""The version files every runtime reads: ``infra/versions/<service>-<version>.env``.

A version is the same code with ``SERVICE_VERSION=vN``; its file (``KEY=value`` lines, ``#``
comments) says what else differs, in two kinds of lines:

- settings of the process (anything else): added to the version's environment, e.g. a
  setting that makes a release slow or faulty so a drill can roll it out;
- its resources, what a Kubernetes container's ``resources`` says, in the same notation::

      REQUESTS_MEMORY=128Mi    REQUESTS_CPU=100m
      LIMITS_MEMORY=256Mi      LIMITS_CPU=500m      (``none``: no limit)

  These go to the runtime, never into the environment: the local supervisor enforces them,
  compose writes them as ``mem_limit``/``cpus``, Kubernetes as ``resources``.

``defaults.env`` beside the version files holds the resources of every version that does not
say otherwise (resource lines only). No file for a version: a plain version with the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.runtime.models import check_version

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
DEFAULTS_FILE = "defaults.env"
RESOURCE_KEYS = ("REQUESTS_MEMORY", "REQUESTS_CPU", "LIMITS_MEMORY", "LIMITS_CPU")
NO_LIMIT = "none"

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_CPU = re.compile(r"^(?:(\d+)m|(\d+(?:\.\d{1,3})?))$")
MIB = 1024**2


class VersionError(ValueError):
    """A bad version name or settings file; the message is one line."""


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise VersionError(f"{path}:{number}: expected KEY=value, got {line!r}")
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match.group(1)] = value
    return values


def version_file(versions_dir: Path, service: str, version: str) -> Path:
    return versions_dir / f"{service}-{version}.env"


def _version_lines(versions_dir: Path, service: str, version: str) -> dict[str, str]:
    try:
        check_version(version)
    except ValueError as exc:
        raise VersionError(str(exc)) from None
    path = version_file(versions_dir, service, version)
    return parse_env_file(path) if path.is_file() else {}


def version_env(versions_dir: Path, service: str, version: str) -> dict[str, str]:
    """The extra settings of ``service`` at ``version`` for its processes ({} when it has no
    file); resource lines are the runtime's and left out."""
    lines = _version_lines(versions_dir, service, version)
    return {k: v for k, v in lines.items() if k not in RESOURCE_KEYS}


# -- resources -------------------------------------------------------------------------------


def parse_memory(text: str) -> int:
    """A Kubernetes memory quantity (``128Mi``, ``1G``, ``134217728``) in bytes."""
    match = _MEMORY.match(text.strip())
    if match is None:
        raise ValueError(f"expected a memory quantity like 256Mi or 1Gi, got {text!r}")
    value = float(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    if value < 1:
        raise ValueError(f"a memory quantity must be at least one byte, got {text!r}")
    return int(value)


def parse_cpu(text: str) -> int:
    """A Kubernetes CPU quantity (``500m``, ``0.5``, ``2``) in millicores."""
    match = _CPU.match(text.strip())
    if match is None:
        raise ValueError(f"expected a CPU quantity like 500m or 0.5, got {text!r}")
    millis = int(match.group(1)) if match.group(1) else round(float(match.group(2)) * 1000)
    if millis < 1:
        raise ValueError(f"a CPU quantity must be at least 1m, got {text!r}")
    return millis


def memory_text(size: int) -> str:
    """Bytes as the shortest exact Kubernetes quantity (``256Mi``, ``1Gi``, bytes)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size % _MEMORY_UNITS[unit] == 0:
            return f"{size // _MEMORY_UNITS[unit]}{unit}"
    return str(size)


def cpu_text(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one service version; ``None``: not declared (no limit)."""

    memory_request: int | None = None  # bytes
    cpu_request: int | None = None  # millicores
    memory_limit: int | None = None
    cpu_limit: int | None = None

    @classmethod
    def from_lines(
        cls, lines: Mapping[str, str], where: str, base: Resources | None = None
    ) -> Resources:
        """The resource lines of a file; what they do not name comes from ``base``."""
        values = dict(vars(base or cls()))
        for key, field, parse in (
            ("REQUESTS_MEMORY", "memory_request", parse_memory),
            ("REQUESTS_CPU", "cpu_request", parse_cpu),
            ("LIMITS_MEMORY", "memory_limit", parse_memory),
            ("LIMITS_CPU", "cpu_limit", parse_cpu),
        ):
            if key not in lines:
                continue
            raw = lines[key].strip()
            try:
                values[field] = None if raw == NO_LIMIT else parse(raw)
            except ValueError as exc:
                raise VersionError(f"{where}: {key}: {exc} (or {NO_LIMIT})") from None
        return cls(**values).check(where)

    def check(self, where: str) -> Resources:
        for what, request, limit in (
            ("memory", self.memory_request, self.memory_limit),
            ("CPU", self.cpu_request, self.cpu_limit),
        ):
            if request is not None and limit is not None and request > limit:
                raise VersionError(f"{where}: the {what} request is above its limit")
        return self

    # -- how the other runtimes write them -------------------------------------------------
    def k8s(self) -> dict[str, dict[str, str]]:
        """A container's ``resources`` (empty sections left out)."""
        out: dict[str, dict[str, str]] = {}
        for section, memory, cpu in (
            ("requests", self.memory_request, self.cpu_request),
            ("limits", self.memory_limit, self.cpu_limit),
        ):
            values = {}
            if cpu is not None:
                values["cpu"] = cpu_text(cpu)
            if memory is not None:
                values["memory"] = memory_text(memory)
            if values:
                out[section] = values
        return out

    def compose(self) -> dict[str, str | int | float]:
        """A compose service's keys: ``mem_limit``/``mem_reservation`` (docker's ``m`` is
        MiB), ``cpus``, and ``cpu_shares`` for the CPU request (1024 a core, as kubelet
        turns requests into shares)."""
        out: dict[str, str | int | float] = {}
        if self.memory_limit is not None:
            out["mem_limit"] = _docker_bytes(self.memory_limit)
        if self.memory_request is not None:
            out["mem_reservation"] = _docker_bytes(self.memory_request)
        if self.cpu_limit is not None:
            out["cpus"] = self.cpu_limit / 1000
        if self.cpu_request is not None:
            out["cpu_shares"] = max(2, self.cpu_request * 1024 // 1000)
        return out


def _docker_bytes(size: int) -> str | int:
    return f"{size // MIB}m" if size % MIB == 0 else size


def default_resources(versions_dir: Path) -> Resources:
    """``defaults.env``: what every version gets unless its own file says otherwise."""
    path = versions_dir / DEFAULTS_FILE
    if not path.is_file():
        return Resources()
    lines = parse_env_file(path)
    stray = sorted(set(lines) - set(RESOURCE_KEYS))
    if stray:
        raise VersionError(
            f"{path}: only {', '.join(RESOURCE_KEYS)} belong here, not {', '.join(stray)}"
        )
    return Resources.from_lines(lines, str(path))


def version_resources(versions_dir: Path, service: str, version: str) -> Resources:
    """The requests and limits of ``service`` at ``version``: its file over the defaults."""
    lines = _version_lines(versions_dir, service, version)
    where = str(version_file(versions_dir, service, version))
    return Resources.from_lines(lines, where, base=default_resources(versions_dir))
