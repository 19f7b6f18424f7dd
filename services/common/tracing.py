"""OpenTelemetry: the tracer provider, exporters, and Kafka trace-context helpers.

HTTP server and client spans and Redis spans come from the OpenTelemetry instrumentations.
Kafka spans are the kit's own (see README: the aiokafka instrumentation ends its consumer span
when the poll returns, so the handler's work and the events it emits would not hang under
it); the producer injects W3C ``traceparent`` into the Kafka headers and the consumer's
``process`` span is a child of it, so one order is one trace across every service.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from services.common.settings import ServiceSettings

TRACER_NAME = "services.common"
# Probes are polled every couple of seconds by Consul and Prometheus: spans for them would
# drown the traces people come to read.
_EXCLUDED_SERVER_URLS = "/healthz,/readyz,/metrics"

KafkaHeaders = Sequence[tuple[str, bytes | None]]


@functools.cache
def tracer() -> trace.Tracer:
    # Looked up once: get_tracer builds a new proxy each call, a measurable cost per span.
    # setup_tracing runs before any span is made, so the cached one uses the real provider.
    return trace.get_tracer(TRACER_NAME)


class JsonLinesSpanExporter(SpanExporter):
    """One span per line in ``<dir>/<service>.jsonl`` (the local runtime has no collector).

    Each batch is written with a single ``write`` on a file opened for appending, so replicas
    of one service sharing the file never interleave inside a line.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(span), default=str) + "\n" for span in spans)
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    resource = span.resource.attributes
    start = span.start_time or 0
    end = span.end_time or start
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": resource.get("service.name"),
        "version": resource.get("service.version"),
        "start_unix_nano": start,
        "end_unix_nano": end,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
            }
            for link in span.links
        ],
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class _NoParentlessClientSpans(Sampler):
    """Root sampler that drops client spans without a parent, samples the rest by ratio.

    Background loops (readiness pings, the outbox relay's reads, Consul watches) would
    otherwise each start a one-span trace of their Redis or HTTP calls.
    """

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoParentlessClientSpans{{{self._ratio.get_description()}}}"


def setup_tracing(settings: ServiceSettings) -> TracerProvider | None:
    """Install the global tracer provider and the instrumentations; call once, early.

    It must run before the app is created: the aiohttp server instrumentation hooks
    ``web.Application`` itself.
    """
    if settings.OTEL_SDK_DISABLED:
        return None
    resource = Resource.create(
        {
            "service.name": settings.SERVICE_NAME,
            "service.version": settings.SERVICE_VERSION,
            "service.instance.id": settings.instance_id,
        }
    )
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(root=_NoParentlessClientSpans(settings.OTEL_TRACES_SAMPLER_ARG)),
    )
    exporter: SpanExporter
    if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT.rstrip("/") + "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
    else:
        path = settings.MESH_TRACES_DIR / f"{settings.SERVICE_NAME}.jsonl"
        exporter = JsonLinesSpanExporter(path)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _instrument_libraries(provider)
    return provider


def _instrument_libraries(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", _EXCLUDED_SERVER_URLS)
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)


# --- trace context through Kafka headers and the outbox -----------------------------------


def current_carrier(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of ``context`` or of the current span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(carrier)


def context_from_headers(headers: KafkaHeaders) -> Context:
    carrier = {key: value.decode("latin-1") for key, value in headers if value is not None}
    return propagate.extract(carrier)


def headers_for_span(span: Span) -> list[tuple[str, bytes]]:
    carrier = current_carrier(trace.set_span_in_context(span))
    return [(key, value.encode("latin-1")) for key, value in carrier.items()]


def _messaging_attributes(
    topic: str, operation: str, message_id: str, key: str | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": message_id,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    return attributes


def start_send_span(
    topic: str, *, message_id: str, key: str | None, parent: Context | None = None
) -> Span:
    """A PRODUCER span, ended by the caller when the broker acknowledged (or refused)."""
    return tracer().start_span(
        f"send {topic}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes=_messaging_attributes(topic, "send", message_id, key),
    )


@contextmanager
def process_span(
    topic: str,
    *,
    partition: int,
    offset: int,
    message_id: str,
    key: str | None,
    group: str,
    headers: KafkaHeaders,
) -> Iterator[Span]:
    """The CONSUMER span of one message's handling, a child of the producer's span."""
    parent = context_from_headers(headers)
    producer = trace.get_current_span(parent).get_span_context()
    if producer.is_valid and not producer.trace_flags.sampled:
        # The order's trace was not sampled at the gateway, and the sampler (parent-based)
        # would drop this span too: skip building it and carry the context on unchanged, so
        # what this handler emits stays in the same (unsampled) trace.
        with trace.use_span(trace.NonRecordingSpan(producer), end_on_exit=False) as span:
            yield span
        return
    attributes = _messaging_attributes(topic, "process", message_id, key)
    attributes["messaging.destination.partition.id"] = str(partition)
    attributes["messaging.kafka.offset"] = offset
    attributes["messaging.consumer.group.name"] = group
    with tracer().start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def mark_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
