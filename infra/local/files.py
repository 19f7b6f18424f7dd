"""The local runtime's files under the state folder (``.mesh/`` or ``$MESH_HOME``).

runtime.json      replicas, desired counts, rollouts (written by the supervisor)
supervisor.json   pid, control port and token of the supervisor (0600)
secrets.json      the gateway's API key and admin token (0600, kept across restarts)
logs/             one file per replica, the supervisor's, autoscaler.jsonl
traces/           span JSON lines written by every process
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUNTIME_FILE = "runtime.json"
SUPERVISOR_FILE = "supervisor.json"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class HomeFiles:
    home: Path

    @property
    def runtime(self) -> Path:
        return self.home / RUNTIME_FILE

    @property
    def supervisor(self) -> Path:
        return self.home / SUPERVISOR_FILE

    @property
    def secrets(self) -> Path:
        return self.home / SECRETS_FILE

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def traces(self) -> Path:
        return self.home / "traces"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def autoscaler_log(self) -> Path:
        return self.logs / "autoscaler.jsonl"

    def replica_log(self, service: str, version: str, port: int) -> Path:
        return self.logs / f"{service}-{version}-{port}.log"


def write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    """Replace ``path`` atomically; readers never see half a file. ``mode`` applies from the
    first byte (the temporary file is created with it), so a secret is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.chmod(tmp, mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class GatewaySecrets:
    api_key: str
    admin_token: str
    service_admin_token: str


def load_or_create_secrets(files: HomeFiles) -> GatewaySecrets:
    """Generated at the first ``up`` and kept, so the printed key stays valid across restarts."""
    data = read_json(files.secrets)
    if isinstance(data, dict) and all(
        isinstance(data.get(k), str) and len(data[k]) >= 16
        for k in ("api_key", "admin_token", "service_admin_token")
    ):
        return GatewaySecrets(data["api_key"], data["admin_token"], data["service_admin_token"])
    fresh = GatewaySecrets(
        secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    )
    write_json(files.secrets, asdict(fresh), mode=0o600)
    return fresh
