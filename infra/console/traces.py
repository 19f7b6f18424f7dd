"""The latest traces, for the console's trace list and waterfall.

Local runtime: every process appends its spans as JSON lines to ``<home>/traces/<service>.jsonl``
(see ``services/common/tracing.py``); :class:`SpanFiles` follows those files the way ``tail -F``
does (new lines each second, a truncated file read again from the start). Compose and k8s:
:class:`JaegerSource` asks the Jaeger query API for each service's recent traces and turns
them into the same span shape. Either way :class:`TraceIndex` groups spans by trace, keeps a
summary of each (services, duration, errors, the order it belongs to) and the spans of a
bounded number of recent traces (their raw JSON lines: a parsed span costs several times
its size in memory), so the console's memory stays bounded however long the platform runs.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

log = logging.getLogger(__name__)

Span = dict[str, Any]

MAX_TRACES = 1000
MAX_SPAN_BYTES = 6 * 1024 * 1024
CATCH_UP_BYTES = 2 * 1024 * 1024  # how far back a file is read when the console starts
READ_LIMIT = 8 * 1024 * 1024  # at most this much of one file per poll
ORDER_KEY = "messaging.kafka.message.key"  # the saga's events are keyed by order id
# Spans indexed per poll at most: past it, whole traces are kept by a hash of their id (the
# same traces in every poll, so none is cut in half), and the frame says how many were left.
SPAN_BUDGET = 2000
_TRACE_ID = b'"trace_id": "'


@dataclass
class TraceSummary:
    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    spans: int = 0
    services: set[str] = field(default_factory=set)
    where: set[str] = field(default_factory=set)  # service@version
    root: str = ""
    root_service: str = ""
    errors: list[str] = field(default_factory=list)
    error_where: set[str] = field(default_factory=set)
    order_id: str | None = None
    seen_at: float = 0.0
    raw: list[bytes] = field(default_factory=list)

    @property
    def error(self) -> bool:
        return bool(self.error_where)

    @property
    def duration_ms(self) -> float:
        return round(max(self.end_ns - self.start_ns, 0) / 1e6, 2)

    def add(self, span: Span, raw: bytes) -> None:
        start, end = int(span.get("start_unix_nano") or 0), int(span.get("end_unix_nano") or 0)
        self.start_ns = min(self.start_ns, start) if self.start_ns else start
        self.end_ns = max(self.end_ns, end)
        self.spans += 1
        service = str(span.get("service") or "?")
        version = str(span.get("version") or "")
        attributes = span.get("attributes") or {}
        upstream = attributes.get("mesh.upstream.version")
        self.services.add(service)
        self.where.add(f"{service}@{version}")
        if not span.get("parent_span_id"):
            self.root, self.root_service = str(span.get("name", "")), service
        if self.order_id is None and attributes.get(ORDER_KEY):
            self.order_id = str(attributes[ORDER_KEY])
        if span.get("status") == "ERROR":
            self.error_where.add(f"{service}@{version}")
            if upstream:  # the gateway's attempt at an upstream version failed
                self.error_where.add(f"upstream:{upstream}")
            if len(self.errors) < 5:
                message = span.get("status_message") or ""
                self.errors.append(
                    f"{service} {version}: {span.get('name')}"
                    + (f" ({message})" if message else "")
                )
        self.raw.append(raw)

    def public(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "start": round(self.start_ns / 1e9, 3),
            "duration_ms": self.duration_ms,
            "spans": self.spans,
            "services": sorted(self.services),
            "where": sorted(self.where),
            "root": self.root,
            "root_service": self.root_service,
            "error": self.error,
            "errors": self.errors,
            "order_id": self.order_id,
        }

    def span_list(self) -> list[Span]:
        out = []
        for raw in self.raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        out.sort(key=lambda s: s.get("start_unix_nano", 0))
        return out


class TraceIndex:
    """Summaries and spans of the latest traces, bounded by count and by bytes."""

    def __init__(self, max_traces: int = MAX_TRACES, max_bytes: int = MAX_SPAN_BYTES) -> None:
        self.max_traces = max_traces
        self.max_bytes = max_bytes
        self.traces: OrderedDict[str, TraceSummary] = OrderedDict()
        self.bytes = 0
        self.spans_seen = 0
        self.kept_share = 1.0  # of the traces in the last poll (1.0: all of them)
        # "service@version" (and "service") -> the latest trace with an error there.
        self.failing: dict[str, str] = {}

    def add_lines(self, lines: Iterable[bytes], budget: int = SPAN_BUDGET) -> int:
        lines = list(lines)
        self.kept_share = 1.0
        if len(lines) > budget:
            self.kept_share = budget / len(lines)
            cut = int(self.kept_share * 2**32)
            lines = [raw for raw in lines if _trace_hash(raw) < cut]
        added = 0
        now = time.time()
        for raw in lines:
            try:
                span = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(span, dict) or "trace_id" not in span:
                continue
            self.add(span, raw, now)
            added += 1
        self._evict()
        return added

    def add(self, span: Span, raw: bytes, now: float | None = None) -> None:
        trace_id = str(span["trace_id"])
        summary = self.traces.get(trace_id)
        if summary is None:
            summary = self.traces[trace_id] = TraceSummary(trace_id, seen_at=now or time.time())
        summary.add(span, raw)
        self.bytes += len(raw)
        self.spans_seen += 1
        if span.get("status") == "ERROR":
            service = str(span.get("service") or "?")
            self.failing[f"{service}@{span.get('version') or ''}"] = trace_id
            self.failing[service] = trace_id
            upstream = (span.get("attributes") or {}).get("mesh.upstream.version")
            target = (span.get("attributes") or {}).get("mesh.upstream.instance")
            if upstream and target:
                # The gateway's failed attempt names the upstream: the version box links here.
                name = str(target).rsplit("-", 2)[0]
                self.failing[f"{name}@{upstream}"] = trace_id
                self.failing[name] = trace_id

    def _evict(self) -> None:
        while self.traces and (len(self.traces) > self.max_traces or self.bytes > self.max_bytes):
            _, oldest = self.traces.popitem(last=False)
            self.bytes -= sum(len(r) for r in oldest.raw)
        alive = set(self.traces)
        self.failing = {k: v for k, v in self.failing.items() if v in alive}

    def get(self, trace_id: str) -> TraceSummary | None:
        return self.traces.get(trace_id)

    def search(
        self,
        *,
        service: str | None = None,
        outcome: str | None = None,
        min_ms: float | None = None,
        order: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The newest traces first, filtered as the trace list's controls ask."""
        out = []
        for summary in reversed(self.traces.values()):
            if before is not None and summary.start_ns / 1e9 > before:
                continue
            if service and service not in summary.services:
                continue
            if outcome == "error" and not summary.error:
                continue
            if outcome == "ok" and summary.error:
                continue
            if min_ms is not None and summary.duration_ms < min_ms:
                continue
            if order and not _mentions(summary, order):
                continue
            out.append(summary.public())
            if len(out) >= limit:
                break
        return out


def _trace_hash(raw: bytes) -> int:
    """A stable 32-bit hash of a span line's trace id, read without parsing the line (the kit
    writes ``trace_id`` first); a line of another shape hashes as a whole."""
    at = raw.find(_TRACE_ID)
    key = raw[at + len(_TRACE_ID) : at + len(_TRACE_ID) + 32] if at >= 0 else raw
    return zlib.crc32(key)


def _mentions(summary: TraceSummary, needle: str) -> bool:
    if summary.order_id and needle in summary.order_id:
        return True
    return any(needle.encode() in raw for raw in summary.raw)


class SpanFiles:
    """Follows ``*.jsonl`` in a folder: each poll returns the complete lines added since."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def poll(self) -> Iterator[bytes]:
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.jsonl")):
            yield from self._read(path)

    def _read(self, path: Path) -> Iterator[bytes]:
        try:
            size = path.stat().st_size
        except OSError:
            return
        offset = self._offsets.get(path)
        first = offset is None
        if offset is None:
            offset = max(0, size - CATCH_UP_BYTES)
        if size < offset:  # truncated or replaced: start again
            offset, first = 0, False
            self._partial.pop(path, None)
        if size == offset:
            self._offsets[path] = offset
            return
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(READ_LIMIT)
        self._offsets[path] = offset + len(chunk)
        data = self._partial.pop(path, b"") + chunk
        lines = data.split(b"\n")
        tail = lines.pop()  # an unfinished line waits for the next poll
        if tail:
            self._partial[path] = tail
        if first and offset > 0 and lines:
            lines.pop(0)  # started mid-file: the first line is a fragment
        yield from (line for line in lines if line.strip())


class JaegerSource:
    """Recent traces of each service from the Jaeger query API (compose and k8s), turned into
    the span shape the local runtime writes."""

    def __init__(self, url: str, services: list[str], lookback: str = "2m", limit: int = 40):
        self.url = url.rstrip("/")
        self.services = services
        self.lookback = lookback
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def poll(self) -> list[bytes]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        lines: list[bytes] = []
        for service in self.services:
            query = urlencode({"service": service, "lookback": self.lookback, "limit": self.limit})
            async with self._http.get(f"{self.url}/api/traces?{query}") as response:
                response.raise_for_status()
                body = await response.json()
            for span in jaeger_spans(body):
                key = (span["trace_id"], span["span_id"])
                if key in self._seen:
                    continue
                self._seen.add(key)
                lines.append(json.dumps(span).encode())
        if len(self._seen) > 200_000:
            self._seen.clear()
        return lines


def jaeger_spans(body: dict[str, Any]) -> Iterator[Span]:
    """Jaeger's ``/api/traces`` answer (``{"data": [{traceID, spans, processes}]}``, times in
    microseconds, tags as ``{key, type, value}``) as the local runtime's span dicts."""
    for trace in body.get("data") or []:
        processes = trace.get("processes") or {}
        for span in trace.get("spans") or []:
            process = processes.get(span.get("processID"), {})
            tags = {t["key"]: t.get("value") for t in span.get("tags") or [] if "key" in t}
            process_tags = {t["key"]: t.get("value") for t in process.get("tags") or []}
            parent = next(
                (
                    r.get("spanID")
                    for r in span.get("references") or []
                    if r.get("refType") == "CHILD_OF"
                ),
                None,
            )
            start = int(span.get("startTime", 0)) * 1000
            duration = int(span.get("duration", 0)) * 1000
            error = tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR"
            yield {
                "trace_id": str(span.get("traceID", trace.get("traceID", ""))).rjust(32, "0"),
                "span_id": str(span.get("spanID", "")),
                "parent_span_id": parent,
                "name": span.get("operationName", ""),
                "kind": str(tags.get("span.kind", "")).upper(),
                "service": process.get("serviceName", "?"),
                "version": str(process_tags.get("service.version", "")),
                "start_unix_nano": start,
                "end_unix_nano": start + duration,
                "duration_ms": round(duration / 1e6, 3),
                "status": "ERROR" if error else "UNSET",
                "status_message": tags.get("otel.status_description"),
                "attributes": {
                    k: v
                    for k, v in tags.items()
                    if k not in ("span.kind", "otel.status_code", "otel.status_description")
                },
            }
