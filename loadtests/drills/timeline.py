"""The drill's timeline: one row per second, what users saw (Locust) beside what the platform
did (replicas, weights, lag), and the window statistics the SLOs are judged on."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.runtime import Runtime

# The services whose Kafka consumer lag is sampled (every service of the saga consumes).
LAG_SERVICES = ("orders", "inventory", "payments", "notifications")
MIB = 1024**2


@dataclass
class PlatformSample:
    at: float
    replicas: dict[str, dict[str, int]]
    healthy: dict[str, int]
    weights: dict[str, dict[str, int]]
    lag: dict[str, float | None]
    # The highest RSS among each version's running replicas, in MiB, and their limit (None:
    # no limit); empty when the runtime does not measure it.
    rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_limit_mb: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass
class PlatformSampler:
    """Reads the runtime once a second in a thread; a slow read (a broker outage makes the
    lag scrape wait) only thins the samples, the timeline carries the last one forward."""

    runtime: Runtime
    interval: float = 1.0
    samples: list[PlatformSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="platform-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def latest(self) -> PlatformSample | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append(self.read())
            except Exception as exc:  # a sample lost is a gap, not a failed drill
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def read(self) -> PlatformSample:
        status = self.runtime.status()
        replicas = {s.name: dict(s.versions) for s in status.services}
        healthy = {s.name: s.healthy for s in status.services}
        # Straight from Consul KV, where the gateway reads them (status may not carry them).
        weights = {}
        for name in healthy:
            current = self.runtime.weights(name)
            if current:
                weights[name] = dict(current)
        lag = {name: self.runtime.consumer_lag(name) for name in LAG_SERVICES if name in healthy}
        rss: dict[str, dict[str, float]] = {}
        limits: dict[str, dict[str, float | None]] = {}
        for replica in status.replicas or []:
            limit = replica.memory_limit_bytes
            limits.setdefault(replica.service, {})[replica.version] = (
                round(limit / MIB, 1) if limit else None
            )
            if replica.rss_bytes is not None:
                versions = rss.setdefault(replica.service, {})
                mb = round(replica.rss_bytes / MIB, 1)
                versions[replica.version] = max(versions.get(replica.version, 0.0), mb)
        return PlatformSample(time.time(), replicas, healthy, weights, lag, rss, limits)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return round(ordered[rank - 1], 1)


@dataclass(frozen=True)
class Window:
    """What users saw between two moments (seconds since the load started)."""

    start: float
    end: float
    requests: int
    failures: int
    p50_ms: float | None
    p99_ms: float | None
    by_name: dict[str, tuple[int, int]]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def service_counts(self, prefix: str) -> tuple[int, int]:
        """Requests and failures of the routes under ``prefix`` (like ``/api/orders``)."""
        picked = [v for name, v in self.by_name.items() if route_path(name).startswith(prefix)]
        return sum(r for r, _ in picked), sum(f for _, f in picked)


def route_path(name: str) -> str:
    """``GET /api/orders/{id}`` -> ``/api/orders/{id}``."""
    return name.split(" ", 1)[-1]


def window(rows: Iterable[Mapping[str, Any]], start: float, end: float) -> Window:
    """Aggregate the rows whose second lies in ``[start, end)``; latencies are exact (each
    row keeps its raw response times), not an average of per-second percentiles."""
    requests = failures = 0
    latencies: list[float] = []
    by_name: dict[str, list[int]] = {}
    for row in rows:
        if not start <= row["t"] < end:
            continue
        requests += row.get("requests", 0)
        failures += row.get("failures", 0)
        latencies += row.get("rt_ms") or []
        for name, counts in (row.get("by_name") or {}).items():
            pair = by_name.setdefault(name, [0, 0])
            pair[0] += counts.get("requests", 0)
            pair[1] += counts.get("failures", 0)
    return Window(
        start,
        end,
        requests,
        failures,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        {name: (r, f) for name, (r, f) in by_name.items()},
    )


def route_latencies(
    rows: Iterable[Mapping[str, Any]], start: float, end: float, prefixes: tuple[str, ...]
) -> list[float]:
    """Every response time in ``[start, end)`` of the routes under ``prefixes``."""
    times: list[float] = []
    for row in rows:
        if start <= row["t"] < end:
            for name, values in (row.get("rt_by_name") or {}).items():
                if route_path(name).startswith(prefixes):
                    times += values
    return times


def build_rows(
    locust: list[dict[str, Any]], platform: list[PlatformSample], started_at: float
) -> list[dict[str, Any]]:
    """One row per second since ``started_at``: the Locust sample of that second and the
    latest platform sample taken by then."""
    rows: list[dict[str, Any]] = []
    platform = sorted(platform, key=lambda p: p.at)
    index = 0
    last: PlatformSample | None = None
    for sample in sorted(locust, key=lambda s: s["t"]):
        t = round(sample["t"] - started_at, 3)
        while index < len(platform) and platform[index].at <= sample["t"]:
            last = platform[index]
            index += 1
        requests = int(sample.get("requests", 0))
        failures = int(sample.get("failures", 0))
        rows.append(
            {
                "t": t,
                "users": sample.get("users"),
                "rps": float(requests),
                "requests": requests,
                "failures": failures,
                "error_rate": round(failures / requests, 4) if requests else 0.0,
                "p50_ms": sample.get("p50_ms"),
                "p95_ms": sample.get("p95_ms"),
                "p99_ms": sample.get("p99_ms"),
                "max_ms": sample.get("max_ms"),
                "by_name": sample.get("by_name", {}),
                "errors": sample.get("errors", {}),
                "completions": sample.get("completions", 0),
                "completion_p99_ms": sample.get("completion_p99_ms"),
                "completion_ms": sample.get("completion_ms", []),
                "rt_ms": sample.get("rt_ms", []),
                "replicas": last.replicas if last else {},
                "healthy": last.healthy if last else {},
                "weights": last.weights if last else {},
                "lag": last.lag if last else {},
                "rt_by_name": sample.get("rt_by_name", {}),
                "rss_mb": last.rss_mb if last else {},
                "rss_limit_mb": last.rss_limit_mb if last else {},
            }
        )
    return rows
