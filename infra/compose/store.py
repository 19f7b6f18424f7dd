"""meshctl's own files of one compose project, under ``.mesh/compose/<project>/``: which
version of each service is stable, and the record of each rollout (who runs it, where it
stands) with the requests other terminals leave for it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ValidationError

from infra.runtime.models import RolloutSpec, RolloutStatus


def process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class RolloutRecord(BaseModel):
    """What other meshctl processes know of a rollout: who runs it and where it stands."""

    owner: int
    owner_started: float | None
    spec: RolloutSpec
    replicas: int
    status: RolloutStatus

    def owner_alive(self) -> bool:
        # pid and start time: a pid alone may have been reused since.
        started = process_started(self.owner)
        return started is not None and (
            self.owner_started is None or abs(started - self.owner_started) < 1.0
        )

    def orphaned(self) -> bool:
        return not self.status.finished and not self.owner_alive()


class RolloutStore:
    """The files under ``.mesh/compose/<project>/``: stable versions and rollout records."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir

    def _write(self, path: Path, document: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True))
        tmp.replace(path)

    def _read(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    # stable versions: {"orders": {"version": "v2", "compose_service": "orders-v2"}}
    @property
    def _stable_path(self) -> Path:
        return self.dir / "stable.json"

    def stable(self) -> dict[str, dict[str, str]]:
        data = self._read(self._stable_path)
        return data if isinstance(data, dict) else {}

    def set_stable(self, service: str, version: str, compose_service: str) -> None:
        data = self.stable()
        data[service] = {"version": version, "compose_service": compose_service}
        self._write(self._stable_path, data)

    # rollout records and the requests of other terminals
    def record(self, service: str) -> RolloutRecord | None:
        data = self._read(self.dir / f"rollout-{service}.json")
        if data is None:
            return None
        try:
            return RolloutRecord.model_validate(data)
        except ValidationError:
            return None

    def save(self, record: RolloutRecord) -> None:
        self._write(self.dir / f"rollout-{record.spec.service}.json", record.model_dump())

    def request(self, service: str, action: str) -> None:
        self._write(self.dir / f"rollout-{service}.{action}", {"at": time.time()})

    def take_request(self, service: str) -> str | None:
        for action in ("abort", "promote"):
            path = self.dir / f"rollout-{service}.{action}"
            if path.exists():
                path.unlink(missing_ok=True)
                return action
        return None

    def busy(self, service: str) -> bool:
        """A rollout of ``service`` is running in a live meshctl process."""
        record = self.record(service)
        return record is not None and not record.status.finished and record.owner_alive()
