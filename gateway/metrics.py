"""The gateway's own series, in the app's registry next to the kit's HTTP metrics.

``upstream_version`` is on every series, so a canary's success rate and latency can be told
apart from stable's: the canary analysis of ``meshctl rollout`` reads exactly these.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.discovery import Discovery

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_requests_total",
            "Requests answered through a route, by upstream version and status.",
            ("route", "upstream", "upstream_version", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to answer through a route, retries included.",
            ("route", "upstream", "upstream_version"),
            buckets=_BUCKETS,
            registry=registry,
        )
        self.attempts = Histogram(
            "gateway_upstream_attempt_duration_seconds",
            "Time of one attempt against one upstream instance.",
            ("upstream", "upstream_version", "outcome"),
            buckets=_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "gateway_retries_total",
            "Attempts after the first, by what caused them.",
            ("route", "upstream", "reason"),
            registry=registry,
        )
        self.budget_exhausted = Counter(
            "gateway_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent.",
            ("route", "upstream"),
            registry=registry,
        )
        self.ejections = Counter(
            "gateway_ejections_total",
            "Instances ejected by passive outlier detection.",
            ("upstream", "instance"),
            registry=registry,
        )
        self.rejected = Counter(
            "gateway_rejected_total",
            "Requests refused before any upstream: auth, rate limit, unknown route, no instance.",
            ("reason",),
            registry=registry,
        )


class DiscoveryCollector(Collector):
    """Instances, ejections and weights as gauges, read from the pools at scrape time."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    def collect(self) -> Iterator[Metric]:
        instances = GaugeMetricFamily(
            "gateway_upstream_instances",
            "Passing instances known to the gateway.",
            labels=("upstream", "upstream_version"),
        )
        ejected = GaugeMetricFamily(
            "gateway_upstream_ejected",
            "Instances currently ejected.",
            labels=("upstream",),
        )
        weights = GaugeMetricFamily(
            "gateway_traffic_weight",
            "Traffic weight per version from Consul KV (absent: no preference).",
            labels=("upstream", "upstream_version"),
        )
        for name, pool in self.discovery.pools.items():
            for version, count in sorted(pool.versions().items()):
                instances.add_metric((name, version), count)
            ejected.add_metric((name,), len(pool.ejected_ids()))
            for version, weight in sorted((self.discovery.weights.get(name) or {}).items()):
                weights.add_metric((name, version), weight)
        yield instances
        yield ejected
        yield weights
