"""What the console's buttons do: the same calls ``meshctl`` makes, on the same runtime.

Scale, rollouts (start, promote, abort), the autoscaler and faults go through the
:class:`~infra.runtime.Runtime` interface (in a worker thread: it is synchronous). A load is
Locust started by :mod:`loadtests.launch`, as ``meshctl load`` starts it; a drill is
``meshctl drill`` itself as a child process, whose progress lines the page shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.runtime import Runtime
from infra.runtime.models import RolloutSpec, check_version
from loadtests.launch import SHAPES, LoadError, LoadRequest, locust_command
from services.common.faults import FaultSettings
from services.common.units import Duration

STOP_GRACE = 15.0
CONSOLE_EXPORT = "console.html"  # the console's recorded window, attached by a drill
REPORTS_LISTED = 40


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScaleIn(_In):
    service: str
    replicas: Annotated[int, Field(ge=0, le=20)]


class ServiceIn(_In):
    service: str


class FaultsIn(_In):
    service: str
    version: str | None = None
    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return check_version(value) if value else None


class ClearFaultsIn(_In):
    service: str
    version: str | None = None


class AutoscaleIn(_In):
    enabled: bool


class LoadIn(_In):
    mode: Literal["closed", "open"] = "closed"
    users: Annotated[int, Field(ge=1, le=500)] = 10
    spawn_rate: Annotated[float, Field(gt=0, le=100)] = 5.0
    arrivals: Annotated[float, Field(gt=0, le=100)] | None = None
    shape: str | None = None
    duration: Duration | None = 60.0

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: str | None) -> str | None:
        if value and value not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
        return value or None


class DrillIn(_In):
    name: str
    duration: Duration | None = None
    service: str = "orders"


class OperationRefused(RuntimeError):
    """An operation the console will not start now (one line; answered 409)."""


class Operations:
    def __init__(self, runtime: Runtime, home: Path) -> None:
        self.runtime = runtime
        self.home = home
        self.load = LoadRunner(runtime, home)
        self.drill = DrillRunner(runtime, home)

    async def _call(self, fn: Any, *args: Any) -> Any:
        result = await asyncio.to_thread(fn, *args)
        return result.model_dump(mode="json") if isinstance(result, BaseModel) else result

    def _known(self, service: str) -> None:
        if service not in {s.name for s in self.runtime.overview().services}:
            raise OperationRefused(f"unknown service {service!r}")

    async def scale(self, body: ScaleIn) -> Any:
        await asyncio.to_thread(self._known, body.service)
        return await self._call(self.runtime.scale, body.service, body.replicas)

    async def rollout(self, spec: RolloutSpec) -> Any:
        await asyncio.to_thread(self._known, spec.service)
        return await self._call(self.runtime.rollout, spec)

    async def promote(self, body: ServiceIn) -> Any:
        return await self._call(self.runtime.rollout_promote, body.service)

    async def abort(self, body: ServiceIn) -> Any:
        return await self._call(self.runtime.rollout_abort, body.service)

    async def autoscale(self, body: AutoscaleIn) -> Any:
        return await self._call(self.runtime.autoscale, body.enabled)

    async def set_faults(self, body: FaultsIn) -> Any:
        await asyncio.to_thread(self._known, body.service)
        faults = FaultSettings(latency_ms=body.latency_ms, error_rate=body.error_rate)
        await asyncio.to_thread(self.runtime.set_faults, body.service, faults, body.version)
        return {"service": body.service, "version": body.version, **faults.model_dump()}

    async def clear_faults(self, body: ClearFaultsIn) -> Any:
        await asyncio.to_thread(self.runtime.set_faults, body.service, None, body.version)
        return {"service": body.service, "version": body.version, "cleared": True}

    async def start_load(self, body: LoadIn) -> Any:
        gateway = await asyncio.to_thread(self.runtime.gateway)
        if gateway is None:
            raise OperationRefused("the platform is not running: no gateway to load")
        request = LoadRequest(
            mode=body.mode,
            users=body.users,
            spawn_rate=body.spawn_rate,
            arrivals=body.arrivals,
            shape=body.shape,
            duration=body.duration,
        )
        try:
            return self.load.start(request, gateway.url, gateway.api_key)
        except LoadError as exc:
            raise OperationRefused(str(exc)) from None

    async def stop_load(self, body: _In | None = None) -> Any:
        return await asyncio.to_thread(self.load.stop)

    async def start_drill(self, body: DrillIn) -> Any:
        return self.drill.start(body)

    async def stop_drill(self, body: _In | None = None) -> Any:
        return await asyncio.to_thread(self.drill.stop)

    def close(self) -> None:
        self.load.stop()
        self.drill.stop()


def _stop_group(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    return process.returncode if process.returncode is not None else 0


class LoadRunner:
    """At most one Locust load started from the page."""

    def __init__(self, runtime: Runtime, home: Path) -> None:
        self.runtime = runtime
        self.log = home / "logs" / "console-load.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.request: LoadRequest | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._lock = threading.Lock()

    def start(self, request: LoadRequest, url: str, api_key: str) -> dict[str, Any]:
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                raise OperationRefused("a load is already running: stop it first")
            argv, env = locust_command(request, url, api_key)
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.request, self.started_at, self.ended_at = request, time.time(), None
        return self.state()

    def stop(self) -> dict[str, Any]:
        with self._lock:
            if self.process is not None:
                _stop_group(self.process)
                self.ended_at = self.ended_at or time.time()
        return self.state()

    def state(self) -> dict[str, Any]:
        process = self.process
        if process is None or self.request is None:
            return {"running": False}
        running = process.poll() is None
        if not running and self.ended_at is None:
            self.ended_at = time.time()
        return {
            "running": running,
            "describe": self.request.describe(),
            "mode": self.request.mode,
            "users": self.request.users,
            "shape": self.request.shape,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit": process.returncode,
            "log": str(self.log),
        }


class DrillRunner:
    """At most one drill at a time: ``meshctl drill NAME --out <reports>/NAME-<time>``."""

    def __init__(self, runtime: Runtime, home: Path) -> None:
        self.runtime = runtime
        self.reports = home / "reports"
        self.home = home
        self.process: subprocess.Popen[bytes] | None = None
        self.name: str | None = None
        self.folder: Path | None = None
        self.lines: deque[str] = deque(maxlen=200)
        self.started_at: float | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._listed: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def start(self, body: DrillIn) -> dict[str, Any]:
        from loadtests.drills.catalog import DRILLS, LESSONS  # no matplotlib until a report

        if body.name not in DRILLS and body.name not in LESSONS:
            known = ", ".join([*DRILLS, *LESSONS])
            raise OperationRefused(f"no drill {body.name!r}: choose one of {known}")
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                raise OperationRefused(f"drill {self.name} is still running")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.folder = self.reports / f"{body.name}-{stamp}"
            argv = [sys.executable, "-m", "infra.meshctl", "drill", body.name]
            argv += ["--runtime", self.runtime.name, "--out", str(self.folder)]
            argv += ["--service", body.service]
            if body.duration:
                argv += ["--duration", f"{body.duration:g}s"]
            env = {**os.environ, "MESH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.name, self.started_at = body.name, time.time()
            self.lines.clear()
            self._reader = threading.Thread(target=self._follow, daemon=True, name="drill-lines")
            self._reader.start()
        return self.state()

    def _follow(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
        process.wait()

    def stop(self) -> dict[str, Any]:
        with self._lock:
            if self.process is not None:
                _stop_group(self.process)
        return self.state()

    def state(self) -> dict[str, Any]:
        process = self.process
        if process is None:
            return {"running": False, "lines": []}
        code = process.poll()
        return {
            "running": code is None,
            "name": self.name,
            "folder": self.folder.name if self.folder else None,
            "started_at": self.started_at,
            "exit": code,
            "verdict": None if code is None else ("passed" if code == 0 else "failed"),
            "lines": list(self.lines)[-14:],
        }

    def listed(self, every: float = 3.0) -> list[dict[str, Any]]:
        """The newest reports under ``<home>/reports`` (cached for a few seconds)."""
        at, cached = self._listed
        if time.monotonic() - at < every:
            return cached
        found = []
        if self.reports.is_dir():
            folders = sorted(self.reports.iterdir(), key=lambda p: p.name, reverse=True)
            for folder in folders[: REPORTS_LISTED * 2]:
                summary = _report_summary(folder)
                if summary is not None:
                    found.append(summary)
                if len(found) >= REPORTS_LISTED:
                    break
        self._listed = (time.monotonic(), found)
        return found


def _report_summary(folder: Path) -> dict[str, Any] | None:
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    slos = report.get("slos") or []
    return {
        "folder": folder.name,
        "drill": report.get("drill"),
        "title": report.get("title"),
        "runtime": report.get("runtime"),
        "passed": bool(report.get("passed")),
        "started_at": report.get("started_at"),
        "duration_s": report.get("duration_s"),
        "slos": [
            {"name": s.get("name"), "passed": s.get("passed"), "measured": s.get("measured")}
            for s in slos
        ],
        "html": (folder / "report.html").exists(),
        "console": (folder / CONSOLE_EXPORT).exists(),
    }
