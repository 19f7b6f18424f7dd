"""The drills' load: the real Locust CLI, headless, in open-loop mode, as a child process.

Locust patches the standard library with gevent, so it never runs inside ``meshctl``; the
drill reads what it measures from two files the locustfile writes (``loadtests/samples.py``):
one line per second of requests and latencies, one line per accepted order.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.runtime.models import GatewayInfo
from loadtests.samples import read_samples

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfile.py"
STOP_GRACE = 15.0


@dataclass(frozen=True)
class LoadPlan:
    """An open-loop load: ``rate`` arrivals per second, optionally a spike to ``spike_rate``
    from ``spike_at`` for ``spike_for`` seconds (the autoscale drill)."""

    rate: float
    user_rate: float = 5.0
    spike_rate: float | None = None
    spike_at: float = 0.0
    spike_for: float = 0.0
    seed: int = 7

    def users(self, rate: float) -> int:
        return max(1, math.ceil(rate / self.user_rate))

    def describe(self) -> str:
        text = f"open loop, {self.rate:g} arrivals/s"
        if self.spike_rate:
            text += f", spike to {self.spike_rate:g}/s at {self.spike_at:g}s"
        return text


@dataclass
class LocustRun:
    plan: LoadPlan
    duration: float
    gateway: GatewayInfo
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _samples_read: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_path(self) -> Path:
        return self.folder / "locust-samples.jsonl"

    @property
    def orders_path(self) -> Path:
        return self.folder / "accepted-orders.jsonl"

    @property
    def log_path(self) -> Path:
        return self.folder / "locust.log"

    def env(self) -> dict[str, str]:
        plan = self.plan
        env = {
            **os.environ,
            "MESH_API_KEY": self.gateway.api_key,
            "LOAD_MODE": "open",
            "LOAD_USER_RATE": f"{plan.user_rate:g}",
            "LOAD_SEED": str(plan.seed),
            "LOAD_SAMPLES": str(self.samples_path),
            "LOAD_ORDERS": str(self.orders_path),
            "LOAD_USERS": str(plan.users(plan.rate)),
            "LOAD_DURATION": f"{self.duration:g}",
            # Users check their order twice a second, not four times: a saga paused by a
            # rebalance should not turn into a storm of polls that the drill then measures.
            "LOAD_POLL_INTERVAL": "0.5",
        }
        if plan.spike_rate:
            env.update(
                LOAD_SHAPE="spike",
                LOAD_SPIKE_USERS=str(plan.users(plan.spike_rate)),
                LOAD_SPIKE_AT=f"{plan.spike_at:g}",
                LOAD_SPIKE_DURATION=f"{plan.spike_for:g}",
                LOAD_SPAWN_RATE=str(plan.users(plan.spike_rate)),
            )
        else:
            env.update(LOAD_SHAPE="steady", LOAD_SPAWN_RATE=str(plan.users(plan.rate)))
        return env

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (self.samples_path, self.orders_path):
            path.unlink(missing_ok=True)
        locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
        argv = [
            locust,
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            self.gateway.url,
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--stop-timeout",
            "5",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_at = time.time()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def samples(self) -> list[dict[str, Any]]:
        """Every per-second sample written so far."""
        if self.samples_path.exists():
            self._samples_read = read_samples(self.samples_path)
        return self._samples_read

    def wait(self, timeout: float) -> int:
        """Wait for Locust to end its run (the shape ends it); stop it if it overstays."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.stop()

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode or 0

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
