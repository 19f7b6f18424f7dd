"""The proxy's spans, made without the SDK's general-purpose span objects.

Every sampled request through the gateway records two spans (SERVER, and CLIENT per
attempt). The SDK's ``Span`` takes a lock per update, wraps its attributes in a bounded,
validated mapping, keeps lists for events and links, calls every processor at the start and
copies itself into a ``ReadableSpan`` at the end: more CPU than the rest of a proxied request.
The proxy's spans need none of it (a handful of attributes it sets itself, no events, no
links), so :class:`RecordedSpan` keeps plain fields and becomes a ``ReadableSpan`` once, at
its end, handed to the tracer's span processor (the kit's batch processor and exporter).

What decides stays the SDK's: the tracer's sampler (head sampling, parent-based), its id
generator and resource, and W3C trace flags exactly as its tracer sets them. An unsampled
request gets the SDK's ``NonRecordingSpan`` with a valid context, so it still passes its
context on (sampled flag off) and the services drop it too.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, TraceFlags

_UNSET = Status()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_DEFAULT = TraceFlags(TraceFlags.DEFAULT)
# The W3C level 2 "random trace id" flag; older SDKs have none.
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)


class RecordedSpan:
    """A sampled span of the proxy: what ``Span`` offers the proxy, without its machinery."""

    __slots__ = ("_end", "attributes", "context", "kind", "name", "parent", "start", "status")

    def __init__(
        self,
        spans: Spans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._end = spans
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.status = _UNSET
        self.start = time_ns()

    def is_recording(self) -> bool:
        return True

    def get_span_context(self) -> SpanContext:
        return self.context

    def update_name(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        self.status = status

    def end(self) -> None:
        self._end.finish(self, time_ns())


ProxySpan = RecordedSpan | NonRecordingSpan


class Spans:
    """Starts the proxy's spans with a tracer's sampler and ids; ends them into its processor."""

    def __init__(self, tracer: trace.Tracer) -> None:
        if not isinstance(tracer, SdkTracer):
            raise TypeError(f"the gateway's spans need the SDK's tracer, not {type(tracer)}")
        self.sampler = tracer.sampler
        self.ids = tracer.id_generator
        self.resource = tracer.resource
        self.processor = tracer.span_processor
        self.info = tracer.instrumentation_info
        self.scope = InstrumentationScope(self.info.name, self.info.version, self.info.schema_url)
        self.random_ids = self.ids.is_trace_id_random() if _RANDOM else False

    def start(
        self,
        name: str,
        kind: SpanKind,
        context: Context | None,
        attributes: dict[str, Any] | None = None,
    ) -> ProxySpan:
        """Like ``Tracer.start_span(name, context, kind, attributes)``: the parent is the
        span in ``context`` (else the current one), and the sampler has the last word."""
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random_id = self.random_ids
        else:
            trace_id = parent.trace_id
            random_id = bool(parent.trace_flags & _RANDOM)
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes)
        flags = _SAMPLED if result.decision.is_sampled() else _DEFAULT
        if random_id:
            flags = TraceFlags(flags | _RANDOM)
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        if not result.decision.is_recording():
            return NonRecordingSpan(span_context)
        recorded = dict(result.attributes or ())
        if attributes:
            recorded.update(attributes)
        return RecordedSpan(self, name, span_context, parent, kind, recorded)

    def child(
        self, parent: RecordedSpan, name: str, kind: SpanKind, attributes: dict[str, Any]
    ) -> ProxySpan:
        return self.start(
            name, kind, trace.set_span_in_context(NonRecordingSpan(parent.context)), attributes
        )

    def finish(self, span: RecordedSpan, end: int) -> None:
        self.processor.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=self.resource,
                attributes=span.attributes,
                kind=span.kind,
                status=span.status,
                start_time=span.start,
                end_time=end,
                instrumentation_info=self.info,
                instrumentation_scope=self.scope,
            )
        )
