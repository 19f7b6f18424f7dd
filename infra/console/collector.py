"""The console's collector: once a second it reads every source, turns counters into the
flows of each edge, builds one *frame* (everything the page shows at that second) and keeps
the last 15 minutes of frames in bounded memory.

A frame is plain JSON. The page renders the newest one live; the scrubber and the exported
file render older ones; a drill report can embed the same frames. Each frame also carries a
compact *tick* (a handful of numbers per version and edge) from which the page draws its
time series without reading whole frames.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.console import series
from infra.console.series import Flow, Windows
from infra.console.sources import (
    ConsulReader,
    KafkaOffsets,
    KafkaReader,
    Reading,
    RedisProbe,
    RuntimeReader,
    Scraper,
)
from infra.console.traces import JaegerSource, SpanFiles, TraceIndex
from infra.kafka.topics import TOPICS
from infra.local import promtext
from infra.runtime import Runtime
from infra.runtime.models import Overview, ReplicaInfo
from services.common.faults import faults_key

log = logging.getLogger(__name__)

FRAME_VERSION = 1
KEEP_SECONDS = 15 * 60
SCRAPED_STATES = frozenset({"ready", "starting", "unhealthy", "stopping", "running"})
MAX_DECISIONS = 4
TRAFFIC_KEY = "mesh/traffic/"

Extra = Callable[[], dict[str, Any]]


@dataclass
class FrameStore:
    """The recorded window: each frame compressed (a tenth of its size), each tick as is."""

    keep: int = KEEP_SECONDS
    times: deque[float] = field(default_factory=deque)
    frames: deque[bytes] = field(default_factory=deque)
    ticks: deque[dict[str, Any]] = field(default_factory=deque)
    latest: bytes = b""

    def add(self, t: float, encoded: bytes, tick: dict[str, Any]) -> None:
        self.latest = encoded
        self.times.append(t)
        self.frames.append(zlib.compress(encoded, 1))
        self.ticks.append(tick)
        while len(self.times) > self.keep:
            self.times.popleft()
            self.frames.popleft()
            self.ticks.popleft()

    def at(self, t: float | None) -> bytes | None:
        """The frame of second ``t`` (the newest taken at or before it); the latest for None."""
        if not self.frames:
            return None
        if t is None:
            return self.latest
        index = bisect.bisect_right(self.times, t) - 1
        return zlib.decompress(self.frames[max(index, 0)])

    def all_frames(self) -> list[bytes]:
        return [zlib.decompress(f) for f in self.frames]

    @property
    def span(self) -> tuple[float, float] | None:
        return (self.times[0], self.times[-1]) if self.times else None

    def memory(self) -> int:
        return sum(len(f) for f in self.frames) + len(self.latest)


@dataclass
class _Instance:
    """What the collector remembers of one scrape target between ticks."""

    tracker: series.CounterTracker
    cpu: tuple[float, float] | None = None  # (wall, cpu seconds) at the last scrape
    rss_mb: float | None = None
    cpu_pct: float | None = None
    lag: dict[tuple[str, str], float] = field(default_factory=dict)
    seen: float = 0.0


class Collector:
    def __init__(
        self,
        runtime: Runtime,
        home: Path,
        *,
        interval: float = 1.0,
        keep: int = KEEP_SECONDS,
        jaeger_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.home = home
        self.interval = interval
        self.clock = clock
        self.reader = RuntimeReader(runtime)
        self.scraper = Scraper()
        self.store = FrameStore(keep)
        self.traces = TraceIndex()
        self.span_files = SpanFiles(home / "traces")
        self.jaeger_url = jaeger_url
        self.jaeger: JaegerSource | None = None
        self.consul: ConsulReader | None = None
        self.kafka: KafkaReader | None = None
        self.redis: RedisProbe | None = None
        self.instances: dict[str, _Instance] = {}
        self.flows: dict[str, Windows] = {}
        self.extras: dict[str, Extra] = {}
        self.listeners: set[asyncio.Queue[bytes]] = set()
        self.seq = 0
        self.last_tick_ms = 0.0
        self._last_scrape: float | None = None
        self._names: list[str] = []
        self._stop = asyncio.Event()

    # -- life ----------------------------------------------------------------------------------
    async def open(self) -> None:
        await self.scraper.open()

    async def close(self) -> None:
        self._stop.set()
        await self.scraper.close()
        for part in (self.consul, self.kafka, self.redis, self.jaeger):
            if part is not None:
                await part.close()

    async def run(self) -> None:
        """Tick every ``interval`` seconds, on a fixed schedule (a slow tick is not repeated)."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("console tick failed")
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0.0
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
        self.listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self.listeners.discard(queue)

    # -- one second ------------------------------------------------------------------------------
    async def tick(self) -> dict[str, Any]:
        started = time.perf_counter()
        now = self.clock()
        overview_reading = await self.reader.overview()
        infra = await self.reader.infra()
        self._connect(infra)
        overview: Overview | None = overview_reading.value if overview_reading.ok else None
        replicas = overview.replicas if overview else []
        names = ([overview.gateway.name] if overview and overview.gateway else []) + [
            s.name for s in (overview.services if overview else [])
        ]
        self._names = names
        scraped = [r for r in replicas if r.state in SCRAPED_STATES and r.address]
        results = await asyncio.gather(
            asyncio.gather(*(self.scraper.scrape(r.address) for r in scraped)),
            self.consul.checks(names) if self.consul else _missing("consul"),
            self.consul.kv() if self.consul else _missing("consul"),
            self.kafka.offsets() if self.kafka else _missing("kafka"),
            self.redis.ping() if self.redis else _missing("redis"),
            self._poll_traces(),
        )
        scrapes, checks, kv, offsets, redis, traces = results
        frame = self.build(now, overview_reading, infra, scraped, scrapes, checks, kv, offsets)
        frame["infra"] = self._infra(infra, checks, offsets, redis)
        frame["traces"] = {
            "latest": self.traces.search(limit=12),
            "failing": dict(self.traces.failing),
            "held": len(self.traces.traces),
            "spans_seen": self.traces.spans_seen,
            "source": traces,
        }
        for name, extra in self.extras.items():
            try:
                frame[name] = extra()
            except Exception as exc:  # an operation's state must not stop the page
                frame[name] = {"error": repr(exc)}
        self.last_tick_ms = round((time.perf_counter() - started) * 1000, 1)
        frame["sources"]["tick_ms"] = self.last_tick_ms
        self._publish(frame)
        return frame

    def _connect(self, infra: dict[str, dict[str, Any]]) -> None:
        if self.consul is None:
            try:
                self.consul = ConsulReader(self.runtime.consul_address())
            except Exception as exc:
                log.debug("consul address unknown yet: %r", exc)
        kafka = (infra.get("kafka") or {}).get("address")
        if self.kafka is None and kafka:
            self.kafka = KafkaReader(str(kafka))
        redis = (infra.get("redis") or {}).get("address")
        if self.redis is None and redis:
            url = str(redis)
            self.redis = RedisProbe(url if "://" in url else f"redis://{url}/0")

    async def _poll_traces(self) -> dict[str, Any]:
        try:
            if self.jaeger_url:
                if self.jaeger is None:
                    self.jaeger = JaegerSource(self.jaeger_url, [])
                self.jaeger.services = list(self._names)
                lines = await asyncio.wait_for(self.jaeger.poll(), 3.0)
                source = f"jaeger {self.jaeger_url}"
            else:
                lines = await asyncio.to_thread(lambda: list(self.span_files.poll()))
                source = f"span files {self.span_files.folder}"
        except Exception as exc:
            return {"ok": False, "error": f"traces: {type(exc).__name__}: {exc}"[:240]}
        added = self.traces.add_lines(lines)
        return {
            "ok": True,
            "source": source,
            "added": added,
            "kept_pct": round(100 * self.traces.kept_share, 1),
        }

    def _publish(self, frame: dict[str, Any]) -> None:
        encoded = json.dumps(frame, separators=(",", ":"), default=str).encode()
        self.store.add(frame["t"], encoded, frame["tick"])
        for queue in list(self.listeners):
            if queue.full():  # a slow page skips a second rather than holding memory
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            queue.put_nowait(encoded)

    # -- the frame ---------------------------------------------------------------------------
    def build(
        self,
        now: float,
        overview_reading: Reading,
        infra: dict[str, dict[str, Any]],
        scraped: list[ReplicaInfo],
        scrapes: list[Reading],
        checks: Reading,
        kv: Reading,
        offsets: Reading,
    ) -> dict[str, Any]:
        """One frame from this second's readings (pure but for the flows it advances)."""
        self.seq += 1
        overview: Overview | None = overview_reading.value if overview_reading.ok else None
        seconds = now - self._last_scrape if self._last_scrape is not None else self.interval
        self._last_scrape = now
        second: dict[str, Flow] = {}
        by_id = {r.id: r for r in scraped}
        failed_scrapes = []
        for replica, reading in zip(scraped, scrapes, strict=True):
            if not reading.ok:
                failed_scrapes.append(reading.error)
                continue
            self._take(replica, reading.value, second, now)
        for key in list(self.instances):
            if key not in by_id and now - self.instances[key].seen > 60:
                del self.instances[key]  # gone for a minute: forget its counters
        for key in second:
            self.flows.setdefault(key, Windows())
        for key, windows in self.flows.items():
            flow = second.get(key) or Flow()
            flow.seconds = seconds
            windows.push(flow)
        for instance in self.instances.values():
            instance.tracker.after_first_scrape()

        check_map: dict[str, dict[str, str]] = checks.value if checks.ok else {}
        mesh_kv: dict[str, Any] = kv.value if kv.ok else {}
        kafka: KafkaOffsets | None = offsets.value if offsets.ok else None
        services = self._services(overview, check_map, mesh_kv)
        gateway = self._gateway(overview, check_map)
        edges = self._edges(overview)
        topics = self._topics(kafka)
        frame: dict[str, Any] = {
            "v": FRAME_VERSION,
            "seq": self.seq,
            "t": round(now, 3),
            "runtime": overview.runtime if overview else self.runtime.name,
            "windows": list(series.WINDOWS),
            "thresholds": {"degraded_pct": series.DEGRADED_PCT, "failing_pct": series.FAILING_PCT},
            "gateway": gateway,
            "services": services,
            "edges": edges,
            "topics": topics,
            "rollouts": self._rollouts(overview, services),
            "autoscaler": self._autoscaler(overview, services),
            "sources": {
                "runtime": _reading_info(overview_reading),
                "consul_checks": _reading_info(checks),
                "consul_kv": _reading_info(kv),
                "kafka": _reading_info(offsets),
                "scrapes": {"ok": len(scraped) - len(failed_scrapes), "failed": failed_scrapes},
            },
        }
        frame["tick"] = _tick(frame)
        return frame

    def _take(
        self,
        replica: ReplicaInfo,
        samples: list[promtext.Sample],
        second: dict[str, Flow],
        now: float,
    ) -> None:
        instance = self.instances.get(replica.id)
        if instance is None:
            # Seen after the console's first scrape: everything it counted is new traffic.
            fresh = self._last_scrape is not None and self.seq > 1
            instance = self.instances[replica.id] = _Instance(series.CounterTracker(fresh))
        instance.seen = now
        tracker = instance.tracker
        for s in samples:
            if s.name == "process_start_time_seconds":
                tracker.process_started(s.value)
                break
        cpu_total: float | None = None
        lag: dict[tuple[str, str], float] = {}
        for s in samples:
            name = s.name
            if name == "gateway_requests_total":
                inc = tracker.increase(series.series_key(name, s.labels), s.value)
                if not inc:
                    continue
                error = s.labels.get("status", "").startswith("5")
                upstream, version = s.labels.get("upstream", "?"), s.labels.get("upstream_version")
                keys = ["users>gateway", f"gateway>{upstream}"]
                if version and version != "none":
                    keys.append(f"gateway>{upstream}@{version}")
                for key in keys:
                    flow = second.setdefault(key, Flow())
                    flow.requests += inc
                    flow.errors += inc if error else 0.0
            elif name == "gateway_request_duration_seconds_bucket":
                inc = tracker.increase(series.series_key(name, s.labels), s.value)
                if not inc:
                    continue
                bound = float(s.labels["le"])
                upstream, version = s.labels.get("upstream", "?"), s.labels.get("upstream_version")
                keys = ["users>gateway", f"gateway>{upstream}"]
                if version and version != "none":
                    keys.append(f"gateway>{upstream}@{version}")
                for key in keys:
                    buckets = second.setdefault(key, Flow()).buckets
                    buckets[bound] = buckets.get(bound, 0.0) + inc
            elif name == "kafka_messages_produced_total":
                inc = tracker.increase(series.series_key(name, s.labels), s.value)
                if inc:
                    key = f"{replica.service}>{s.labels.get('topic', '?')}"
                    second.setdefault(key, Flow()).requests += inc
            elif name == "kafka_messages_consumed_total":
                inc = tracker.increase(series.series_key(name, s.labels), s.value)
                if inc:
                    flow = second.setdefault(
                        f"{s.labels.get('topic', '?')}>{replica.service}", Flow()
                    )
                    flow.requests += inc
                    if s.labels.get("outcome") == "dead_lettered":
                        flow.errors += inc
            elif name == "kafka_consumer_lag":
                lag[(s.labels.get("topic", ""), s.labels.get("partition", ""))] = s.value
            elif name == "process_resident_memory_bytes":
                instance.rss_mb = round(s.value / 1e6, 1)
            elif name == "process_cpu_seconds_total":
                cpu_total = s.value
        instance.lag = lag
        if cpu_total is not None:
            if instance.cpu is not None and now > instance.cpu[0]:
                used = promtext.delta(cpu_total, instance.cpu[1])
                instance.cpu_pct = round(100.0 * used / (now - instance.cpu[0]), 1)
            instance.cpu = (now, cpu_total)

    def _stats(self, key: str) -> dict[str, dict[str, float | None]]:
        windows = self.flows.get(key)
        return (
            windows.stats() if windows is not None else {w: Flow().stats() for w in series.WINDOWS}
        )

    def _instance(self, replica: ReplicaInfo, checks: dict[str, dict[str, str]]) -> dict[str, Any]:
        known = self.instances.get(replica.id)
        check = checks.get(replica.id)
        return {
            "id": replica.id,
            "address": replica.address,
            "state": replica.state,
            "check": check["status"] if check else "missing",
            "check_output": check["output"] if check else "",
            "restarts": replica.restarts,
            "last_exit": replica.last_exit,
            "started_at": replica.started_at,
            "pid": replica.pid,
            "rss_mb": known.rss_mb if known else None,
            "cpu_pct": known.cpu_pct if known else None,
        }

    def _services(
        self, overview: Overview | None, checks: dict[str, dict[str, str]], kv: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if overview is None:
            return []
        out = []
        for service in overview.services:
            name = service.name
            weights = kv.get(TRAFFIC_KEY + name)
            weights = weights if isinstance(weights, dict) else None
            mine = [r for r in overview.replicas if r.service == name]
            found = sorted(
                {r.version for r in mine} | set(service.desired) | set(weights or {}),
                key=_version_order,
            )
            edge = self._stats(f"gateway>{name}")
            per_version = {v: self._stats(f"gateway>{name}@{v}") for v in found}
            share = {
                w: series.shares({v: per_version[v][w]["requests"] or 0.0 for v in found})
                for w in series.WINDOWS
            }
            versions: list[dict[str, Any]] = []
            for version in found:
                instances = [self._instance(r, checks) for r in mine if r.version == version]
                stats = per_version[version]
                passing = sum(1 for i in instances if i["check"] == "passing")
                states = [
                    series.health(stats[w]["err_pct"], stats[w]["requests"] or 0) for w in ("10s",)
                ]
                if instances and passing == 0:
                    states.append("down")
                elif passing < len(instances):
                    states.append("degraded")
                faults = kv.get(f"{faults_key(name)}/{version}")
                versions.append(
                    {
                        "version": version,
                        "stable": version == service.stable,
                        "desired": service.desired.get(version, 0),
                        "instances": instances,
                        "passing": passing,
                        "weight": (weights or {}).get(version),
                        "share": {w: share[w].get(version) for w in series.WINDOWS},
                        "stats": stats,
                        "health": series.worst(states),
                        "faults": faults if isinstance(faults, dict) else None,
                    }
                )
            faults = kv.get(faults_key(name))
            out.append(
                {
                    "name": name,
                    "stable": service.stable,
                    "replicas": service.replicas,
                    "healthy": service.healthy,
                    "desired": service.desired,
                    "rollout": service.rollout,
                    "weights": weights,
                    "faults": faults if isinstance(faults, dict) else None,
                    "stats": edge,
                    "health": series.worst(str(v["health"]) for v in versions),
                    "versions": versions,
                }
            )
        return out

    def _gateway(
        self, overview: Overview | None, checks: dict[str, dict[str, str]]
    ) -> dict[str, Any] | None:
        if overview is None or overview.gateway is None:
            return None
        gateway = overview.gateway
        mine = [r for r in overview.replicas if r.service == gateway.name]
        instances = [self._instance(r, checks) for r in mine]
        passing = sum(1 for i in instances if i["check"] == "passing")
        return {
            "name": gateway.name,
            "url": gateway.url,
            "healthy": gateway.healthy,
            "instances": instances,
            "passing": passing,
            "health": "ok" if passing else "down",
            "stats": self._stats("users>gateway"),
        }

    def _edges(self, overview: Overview | None) -> list[dict[str, Any]]:
        if overview is None:
            return []
        edges: list[dict[str, Any]] = [
            {
                "id": "users>gateway",
                "from": "users",
                "to": "gateway",
                "kind": "http",
                "stats": self._stats("users>gateway"),
            }
        ]
        for service in overview.services:
            edges.append(
                {
                    "id": f"gateway>{service.name}",
                    "from": "gateway",
                    "to": service.name,
                    "kind": "http",
                    "stats": self._stats(f"gateway>{service.name}"),
                }
            )
        for edge in edges:
            edge["health"] = {
                w: series.health(edge["stats"][w]["err_pct"], edge["stats"][w]["requests"] or 0)
                for w in series.WINDOWS
            }
        return edges

    def _topics(self, kafka: KafkaOffsets | None) -> list[dict[str, Any]]:
        producers: dict[str, set[str]] = {}
        for key in self.flows:
            left, _, right = key.partition(">")
            if right in {t.name for t in TOPICS} and "@" not in key:
                producers.setdefault(right, set()).add(left)
        out = []
        for topic in TOPICS:
            groups = []
            for group in topic.consumers:
                lag: float | None = None
                source = "none"
                if kafka is not None and group in kafka.committed:
                    ends = {k: v for k, v in kafka.end.items() if k[0] == topic.name}
                    lag = series.lag_from_offsets(ends, kafka.committed[group]).get(topic.name, 0)
                    source = "offsets"
                else:
                    fallback = self._metric_lag(group, topic.name)
                    if fallback is not None:
                        lag, source = fallback, "replica metrics"
                flow = self.flows.get(f"{topic.name}>{group}")
                groups.append(
                    {
                        "group": group,
                        "consumed": flow.rates() if flow else dict.fromkeys(series.WINDOWS, 0.0),
                        "dead_lettered": (round(flow.sums["5m"].errors) if flow is not None else 0),
                        "lag": lag,
                        "lag_source": source,
                    }
                )
            produced = {w: 0.0 for w in series.WINDOWS}
            by_producer = []
            for service in sorted(producers.get(topic.name, set()) | set(topic.producers)):
                flow = self.flows.get(f"{service}>{topic.name}")
                rates = flow.rates() if flow else dict.fromkeys(series.WINDOWS, 0.0)
                by_producer.append({"service": service, "produced": rates})
                for w in series.WINDOWS:
                    produced[w] = round(produced[w] + rates[w], 2)
            end = sum(v for k, v in (kafka.end.items() if kafka else ()) if k[0] == topic.name)
            out.append(
                {
                    "name": topic.name,
                    "partitions": topic.partitions,
                    "description": topic.description,
                    "dlq": topic.dlq if topic.consumers else None,
                    "producers": by_producer,
                    "produced": produced,
                    "messages": end if kafka else None,
                    "groups": groups,
                }
            )
        return out

    def _metric_lag(self, group: str, topic: str) -> float | None:
        """The group's lag from its replicas' own gauges, each partition counted once."""
        found: dict[str, float] = {}
        for instance_id, instance in self.instances.items():
            if not instance_id.startswith(f"{group}-"):
                continue
            for (t, partition), value in instance.lag.items():
                if t == topic:
                    found[partition] = max(found.get(partition, 0.0), value)
        return sum(found.values()) if found else None

    def _rollouts(
        self, overview: Overview | None, services: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if overview is None:
            return {}
        out = {}
        for name, status in overview.rollouts.items():
            data = status.model_dump(mode="json")
            data["events"] = data["events"][-30:]
            service = next((s for s in services if s["name"] == name), None)
            if service is not None:
                data["measured"] = {
                    v["version"]: {"share": v["share"], "stats": v["stats"]["10s"]}
                    for v in service["versions"]
                }
            out[name] = data
        return out

    def _autoscaler(
        self, overview: Overview | None, services: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        if overview is None or overview.autoscale is None:
            return None
        status = overview.autoscale
        replicas = {s["name"]: s["replicas"] for s in services}
        out: dict[str, Any] = {"enabled": status.enabled, "services": {}}
        for name, target in status.targets.items():
            decisions = status.services.get(name, [])
            latest = decisions[-1] if decisions else None
            out["services"][name] = {
                "target": target.model_dump(mode="json"),
                "replicas": replicas.get(name),
                "desired": latest.desired if latest else None,
                "metrics": [m.model_dump(mode="json") for m in latest.metrics] if latest else [],
                "decisions": [
                    {
                        "at": d.at,
                        "current": d.current,
                        "raw": d.raw_desired,
                        "stabilized": d.stabilized,
                        "desired": d.desired,
                        "reason": d.reason,
                        "metrics": {m.name: [m.value, m.target, m.desired] for m in d.metrics},
                    }
                    for d in decisions[-MAX_DECISIONS:]
                ],
            }
        return out

    def _infra(
        self,
        infra: dict[str, dict[str, Any]],
        checks: Reading,
        offsets: Reading,
        redis: Reading,
    ) -> dict[str, Any]:
        def part(name: str, reading: Reading) -> dict[str, Any]:
            info = infra.get(name) or {}
            return {
                "healthy": reading.ok,
                "address": info.get("address"),
                "source": info.get("source"),
                "error": reading.error,
                "took_ms": round(reading.took_ms, 1),
            }

        return {
            "kafka": part("kafka", offsets),
            "redis": part("redis", redis),
            "consul": part("consul", checks),
        }


async def _missing(what: str) -> Reading:
    return Reading(False, error=f"{what}: address not known yet")


def _reading_info(reading: Reading) -> dict[str, Any]:
    return {"ok": reading.ok, "error": reading.error, "took_ms": round(reading.took_ms, 1)}


def _version_order(version: str) -> tuple[int, str]:
    digits = version[1:]
    return (int(digits), version) if digits.isdigit() else (1_000_000, version)


def _tick(frame: dict[str, Any]) -> dict[str, Any]:
    """The numbers the page's time series need, for one second (over the 10 s window)."""
    versions = {}
    replicas = {}
    for service in frame["services"]:
        replicas[service["name"]] = service["replicas"]
        for v in service["versions"]:
            stats = v["stats"]["10s"]
            versions[f"{service['name']}@{v['version']}"] = [
                stats["rps"],
                stats["err_pct"],
                stats["p99_ms"],
                v["share"]["10s"],
                v["weight"],
                len(v["instances"]),
            ]
    edges = {
        e["id"]: [
            e["stats"]["10s"]["rps"],
            e["stats"]["10s"]["err_pct"],
            e["stats"]["10s"]["p99_ms"],
        ]
        for e in frame["edges"]
    }
    lag = {f"{t['name']}>{g['group']}": g["lag"] for t in frame["topics"] for g in t["groups"]}
    return {"t": frame["t"], "v": versions, "r": replicas, "e": edges, "lag": lag}
