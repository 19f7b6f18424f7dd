"""Prometheus metrics of one app, in a registry of its own.

A per-app registry (rather than prometheus-client's global one) lets tests and tools build
several apps in one process without "Duplicated timeseries" errors. Every series carries
``service`` and ``version`` so a canary's numbers can be told apart from the stable ones.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

_BASE = ("service", "version")
# Finer at the low end: most answers take a few milliseconds, the SLO edge is around 1 s.
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LabelCache:
    """``cache(metric, *label_values)`` is ``metric.labels(...)``, looked up once per label set:
    ``labels()`` takes a lock and builds a tuple, too slow for every request of a proxy."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def __call__(self, metric: MetricWrapperBase, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child


class Metrics:
    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.version = version
        self._cache = LabelCache()
        self.registry = CollectorRegistry(auto_describe=True)
        # Process CPU and memory feed the autoscaling drills' reports.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        reg = self.registry

        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            (*_BASE, "route", "method", "status"),
            registry=reg,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request.",
            (*_BASE, "route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being served.", _BASE, registry=reg
        )
        self.kafka_produced = Counter(
            "kafka_messages_produced_total",
            "Messages the broker acknowledged.",
            (*_BASE, "topic"),
            registry=reg,
        )
        self.kafka_produce_errors = Counter(
            "kafka_produce_errors_total",
            "Messages the broker did not acknowledge (they are retried).",
            (*_BASE, "topic"),
            registry=reg,
        )
        self.kafka_consumed = Counter(
            "kafka_messages_consumed_total",
            "Messages a consumer finished, by outcome (handled, duplicate, dead_lettered).",
            (*_BASE, "topic", "outcome"),
            registry=reg,
        )
        self.kafka_handler_errors = Counter(
            "kafka_handler_errors_total",
            "Handler attempts that raised.",
            (*_BASE, "topic"),
            registry=reg,
        )
        self.kafka_dlq = Counter(
            "kafka_dlq_messages_total",
            "Messages sent to <topic>.dlq.",
            (*_BASE, "topic"),
            registry=reg,
        )
        self.kafka_lag = Gauge(
            "kafka_consumer_lag",
            "Messages behind the end of the partition (highwater - position).",
            (*_BASE, "topic", "partition"),
            registry=reg,
        )
        self.kafka_handle_latency = Histogram(
            "kafka_handle_duration_seconds",
            "Time to handle one message, retries included.",
            (*_BASE, "topic"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.outbox_published = Counter(
            "outbox_published_total", "Outbox events relayed to Kafka.", _BASE, registry=reg
        )
        self.outbox_pending = Gauge(
            "outbox_pending",
            "Outbox events written and not yet acknowledged by the broker.",
            _BASE,
            registry=reg,
        )
        self.faults_injected = Counter(
            "faults_injected_total",
            "Faults injected from mesh/faults/<service>, by kind (latency, error).",
            (*_BASE, "kind"),
            registry=reg,
        )

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """The series of ``metric`` for this service and version and ``values``, cached."""
        return self._cache(metric, self.service, self.version, *values)

    @property
    def base(self) -> dict[str, str]:
        return {"service": self.service, "version": self.version}

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
