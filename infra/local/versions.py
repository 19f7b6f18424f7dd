"""Versions of a service: the same code with ``SERVICE_VERSION=vN`` plus optional settings.

A version may have a file ``infra/versions/<service>-<version>.env`` (``KEY=value`` lines,
``#`` comments) whose variables are added to that version's replicas, for example a setting
that makes it slow or faulty so a drill can roll out a bad version. No file: a plain version.
"""

from __future__ import annotations

import re
from pathlib import Path

from infra.runtime.models import check_version

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


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


def version_env(versions_dir: Path, service: str, version: str) -> dict[str, str]:
    """The extra settings of ``service`` at ``version`` ({} when it has no file)."""
    try:
        check_version(version)
    except ValueError as exc:
        raise VersionError(str(exc)) from None
    path = version_file(versions_dir, service, version)
    if not path.is_file():
        return {}
    return parse_env_file(path)
