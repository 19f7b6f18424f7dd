"""Traces: spans as JSON lines, and one trace from an HTTP request through Kafka to the
consumer (child-of, not a link)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from kit_support import Sample, eventually
from opentelemetry.sdk.trace import TracerProvider

from services.common.logging import JsonFormatter
from services.common.tracing import current_carrier, process_span

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
FIELDS = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "service",
    "version",
    "start_unix_nano",
    "end_unix_nano",
    "duration_ms",
    "status",
    "attributes",
}


def _spans(sample: Sample, trace_id: str) -> list[dict[str, Any]]:
    path = Path(sample.env["MESH_TRACES_DIR"]) / f"{sample.name}.jsonl"
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    return [span for span in spans if span["trace_id"] == trace_id]


async def _consumer_span_written(sample: Sample) -> list[dict[str, Any]]:
    spans = _spans(sample, TRACE_ID)
    return spans if any(s["kind"] == "CONSUMER" for s in spans) else []


async def test_one_trace_from_request_through_kafka_to_consumer(shared_sample: Sample) -> None:
    sample = shared_sample
    status, _, body = sample.request(
        "POST",
        "/items",
        {"name": "traced", "quantity": 3},
        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
    )
    assert status == 202
    spans = await eventually(
        lambda: _consumer_span_written(sample), timeout=10, what="consumer span in the file"
    )
    for span in spans:
        assert set(span) >= FIELDS
        assert (span["service"], span["version"]) == (sample.name, "v3")
        assert span["end_unix_nano"] >= span["start_unix_nano"]
    by_kind = {span["kind"]: span for span in spans if span["kind"] != "CLIENT"}
    server, producer, consumer = by_kind["SERVER"], by_kind["PRODUCER"], by_kind["CONSUMER"]

    assert server["name"] == "POST /items"
    assert server["parent_span_id"] == CALLER_SPAN
    assert producer["name"] == f"send {sample.topic}"
    assert producer["parent_span_id"] == server["span_id"]  # emitted through the outbox
    assert consumer["name"] == f"process {sample.topic}"
    assert consumer["parent_span_id"] == producer["span_id"]  # child-of the producer

    for span in (producer, consumer):
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "kafka"
        assert attributes["messaging.destination.name"] == sample.topic
        assert attributes["messaging.kafka.message.key"] == body["id"]
    assert producer["attributes"]["messaging.operation.type"] == "send"
    assert consumer["attributes"]["messaging.operation.type"] == "process"
    assert consumer["attributes"]["messaging.consumer.group.name"] == sample.name
    message_id = consumer["attributes"]["messaging.message.id"]
    assert producer["attributes"]["messaging.message.id"] == message_id

    redis_spans = [s for s in spans if s["attributes"].get("db.system") == "redis"]
    parents = {s["parent_span_id"] for s in redis_spans}
    assert {server["span_id"], consumer["span_id"]} <= parents


def test_log_lines_carry_service_and_trace_ids() -> None:
    formatter = JsonFormatter("orders", "v2")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        record = logging.makeLogRecord(
            {"msg": "charged %s", "args": ("o-1",), "levelname": "INFO", "amount": 12}
        )
        line = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert line["message"] == "charged o-1"
    assert (line["service"], line["version"], line["level"]) == ("orders", "v2", "info")
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["amount"] == 12
    assert line["ts"].endswith("+00:00")


def test_an_unsampled_message_carries_its_trace_on_without_a_span() -> None:
    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
    headers = [("traceparent", unsampled.encode()), ("mesh-other", None)]
    with process_span(
        "orders.created",
        partition=0,
        offset=7,
        message_id="m-1",
        key="o-1",
        group="inventory",
        headers=headers,
    ) as span:
        assert not span.is_recording()
        carrier = current_carrier()
    # What the handler emits goes on in the same trace, still unsampled.
    assert carrier["traceparent"] == unsampled
