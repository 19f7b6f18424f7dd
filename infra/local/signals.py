"""Per-replica metrics for the autoscaler: requests in flight, CPU, Kafka consumer lag.

Gauges (in flight, lag) are sampled every ``sample_interval`` and averaged over the sync
period, so one scrape landing between two bursts does not decide alone. CPU is the process's
CPU time over the period (psutil), in percent of one core.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import psutil

from infra.local import promtext
from infra.local.catalog import ServiceSpec
from infra.runtime.models import MetricReading

log = logging.getLogger(__name__)

# Reads the /metrics of the replica at an address (host:port).
SCRAPE_TIMEOUT = 2.0
Scrape = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class Target:
    """A replica the autoscaler may read: where its /metrics answers, and the pid of its
    process when this machine sees it (CPU; None: a container in a VM, no CPU reading)."""

    address: str
    pid: int | None


@dataclass
class _CpuMark:
    wall: float
    cpu: float


@dataclass
class Signals:
    spec: ServiceSpec
    scrape: Scrape
    clock: Callable[[], float] = time.monotonic
    _in_flight: list[float] = field(default_factory=list)
    _lag: list[float] = field(default_factory=list)
    _cpu: dict[int, _CpuMark] = field(default_factory=dict)

    def reset(self) -> None:
        self._in_flight.clear()
        self._lag.clear()
        self._cpu.clear()

    @property
    def _kinds(self) -> set[str]:
        assert self.spec.autoscale is not None
        return {m.type for m in self.spec.autoscale.metrics}

    async def sample(self, replicas: Sequence[Target]) -> None:
        """Read the gauges of every ready replica once."""
        kinds = self._kinds
        if "cpu" in kinds:
            # The first sight of a replica starts its measuring period.
            for replica in replicas:
                if replica.pid is None or replica.pid in self._cpu:
                    continue
                mark = self._cpu_mark(replica.pid)
                if mark is not None:
                    self._cpu[replica.pid] = mark
        if not replicas or not kinds & {"in_flight", "lag"}:
            return
        texts = await asyncio.gather(*(self._read(r.address) for r in replicas))
        parsed = [promtext.parse(t) for t in texts if t is not None]
        if not parsed:
            return
        if "in_flight" in kinds:
            # The kit leaves probes and scrapes out of the gauge: it is business load only.
            values = [promtext.total(s, "http_requests_in_flight") for s in parsed]
            self._in_flight.append(sum(values) / len(values))
        if "lag" in kinds:
            self._lag.append(group_lag(parsed))

    async def _read(self, address: str) -> str | None:
        try:
            return await asyncio.wait_for(self.scrape(address), SCRAPE_TIMEOUT)
        except Exception as exc:  # a replica that is going away: skip it this time
            log.debug("scrape of %s failed: %s", address, exc)
            return None

    def _cpu_mark(self, pid: int) -> _CpuMark | None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return _CpuMark(self.clock(), times.user + times.system)

    def readings(self, replicas: Sequence[Target], current: int) -> list[MetricReading]:
        """One value per configured metric over the period since the last call."""
        spec = self.spec.autoscale
        assert spec is not None
        out = []
        for metric in spec.metrics:
            value: float | None
            detail: dict[str, object]
            if metric.type == "in_flight":
                value, detail = _mean(self._in_flight), {"samples": len(self._in_flight)}
            elif metric.type == "cpu":
                value, detail = self._cpu_percent(replicas)
            else:
                value, detail = self._lag_per_replica(metric.target, current)
            out.append(
                MetricReading(
                    name=metric.type,
                    value=round(value, 3) if value is not None else None,
                    target=metric.target,
                    detail=detail,
                )
            )
        self._in_flight.clear()
        self._lag.clear()
        return out

    def _cpu_percent(self, replicas: Sequence[Target]) -> tuple[float | None, dict[str, object]]:
        percents: dict[str, float] = {}
        for replica in replicas:
            if replica.pid is None:
                continue
            before = self._cpu.get(replica.pid)
            now = self._cpu_mark(replica.pid)
            if now is None:
                continue
            self._cpu[replica.pid] = now
            if before is None or now.wall <= before.wall:
                continue
            percents[replica.address] = round(
                100 * (now.cpu - before.cpu) / (now.wall - before.wall), 1
            )
        alive = {r.pid for r in replicas}
        self._cpu = {pid: mark for pid, mark in self._cpu.items() if pid in alive}
        return _mean(list(percents.values())), {"per_replica": percents}

    def _lag_per_replica(
        self, threshold: float, current: int
    ) -> tuple[float | None, dict[str, object]]:
        total = _mean(self._lag)
        if total is None or current < 1:
            return None, {"samples": 0}
        partitions = self.spec.partitions()
        assert self.spec.autoscale is not None
        capped = False
        if not self.spec.autoscale.allow_idle_consumers and partitions > 0:
            # KEDA: more consumers than partitions would sit idle, so lag never asks for more.
            ceiling = partitions * threshold
            capped = total > ceiling
            total = min(total, ceiling)
        detail: dict[str, object] = {
            "total_lag": round(total, 1),
            "partitions": partitions,
            "capped": capped,
        }
        return total / current, detail


def group_lag(scrapes: Sequence[Sequence[promtext.Sample]]) -> float:
    """The consumer group's lag from its replicas' ``kafka_consumer_lag{topic,partition}``.

    Partitions move between replicas during a rebalance: each one counts once (its highest).
    """
    lag: dict[tuple[str, str], float] = {}
    for samples in scrapes:
        for s in promtext.matching(samples, "kafka_consumer_lag"):
            key = (s.labels.get("topic", ""), s.labels.get("partition", ""))
            lag[key] = max(lag.get(key, 0.0), s.value)
    return sum(lag.values())


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
