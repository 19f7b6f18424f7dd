"""The gateway's own series, in the app's registry next to the kit's HTTP metrics.

``upstream_version`` is on every series, so a canary's success rate and latency can be told
apart from stable's: the canary analysis of ``meshctl rollout`` reads exactly these.

The three series every proxied request touches (requests, latency, attempts) are tallied in
plain Python and turned into metric families when ``/metrics`` is scraped: a prometheus
Counter or Histogram takes a lock per update and walks its buckets in Python, which cost
more per request than the routing did. The output is the same text (``_total``, ``_bucket``,
``_count``, ``_sum`` and ``_created``). The rare series (retries, ejections, refusals) stay
prometheus objects.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.discovery import Discovery

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# As prometheus_client does (PROMETHEUS_DISABLE_CREATED_SERIES turns them off).
_CREATED = getattr(_prometheus_metrics, "_use_created", True)


class CounterTally(Collector):
    """A labelled counter: ``inc(labels)`` with a tuple of label values, no lock (the event
    loop is the only writer; a scrape runs on the same loop)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.counts: dict[tuple[str, ...], int] = {}
        self.created: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: int = 1) -> None:
        count = self.counts.get(labels)
        if count is None:
            self.created[labels] = time.time()
            count = 0
        self.counts[labels] = count + amount

    def value(self, labels: tuple[str, ...]) -> int:
        return self.counts.get(labels, 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in list(self.counts.items()):
            created = self.created[labels] if _CREATED else None
            family.add_metric(labels, count, created=created)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class HistogramTally(Collector):
    """A labelled histogram with fixed buckets: ``observe(labels, seconds)``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        registry: CollectorRegistry,
        buckets: tuple[float, ...] = _BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = buckets
        self.names = [*(floatToGoString(b) for b in buckets), "+Inf"]
        # Per label set: one count per bucket (not cumulative), the +Inf one, then the sum.
        self.series: dict[tuple[str, ...], list[float]] = {}
        self.created: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
            self.created[labels] = time.time()
        series[bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self.series.items()):
            cumulative = 0.0
            buckets = []
            for name, count in zip(self.names, series[:-1], strict=True):
                cumulative += count
                buckets.append((name, cumulative))
            family.add_metric(labels, buckets, series[-1])
            if _CREATED:
                names = dict(zip(self.labelnames, labels, strict=True))
                family.add_sample(self.name + "_created", names, self.created[labels])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = CounterTally(
            "gateway_requests_total",
            "Requests answered through a route, by upstream version and status.",
            ("route", "upstream", "upstream_version", "status"),
            registry,
        )
        self.latency = HistogramTally(
            "gateway_request_duration_seconds",
            "Time from request to answer through a route, retries included.",
            ("route", "upstream", "upstream_version"),
            registry,
        )
        self.attempts = HistogramTally(
            "gateway_upstream_attempt_duration_seconds",
            "Time of one attempt against one upstream instance.",
            ("upstream", "upstream_version", "outcome"),
            registry,
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
        panics = CounterMetricFamily(
            "gateway_upstream_panic",
            "Instances chosen while too few were left un-ejected (ejections ignored).",
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
            panics.add_metric((name,), pool.panics)
            for version, weight in sorted((self.discovery.weights.get(name) or {}).items()):
                weights.add_metric((name, version), weight)
        yield instances
        yield ejected
        yield panics
        yield weights
