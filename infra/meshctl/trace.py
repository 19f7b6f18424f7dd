"""``meshctl trace ORDER_ID|TRACE_ID``: the span tree of a request, from the span files.

On the local runtime every process writes its spans as JSON lines under ``<home>/traces``
(one object per span: trace_id, span_id, parent_span_id, name, kind, service, version, start
and end in unix nanoseconds, duration_ms, status, attributes). A 32-hex-digit argument is a
trace id; anything else is looked for in span attributes (an order id, a request id), and
every trace that mentions it is printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.meshctl.output import CommandError

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
Span = dict[str, Any]


def read_spans(folder: Path) -> Iterator[Span]:
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    span = json.loads(line)
                except ValueError:  # a line being written right now
                    continue
                if isinstance(span, dict) and "trace_id" in span and "span_id" in span:
                    yield span


def _mentions(span: Span, needle: str) -> bool:
    attributes = span.get("attributes") or {}
    return any(needle in str(value) for value in attributes.values()) or needle in str(
        span.get("name", "")
    )


def find_traces(spans: list[Span], wanted: str) -> dict[str, list[Span]]:
    """Trace id -> its spans, for every trace that is ``wanted`` or mentions it."""
    key = wanted.lower()
    if TRACE_ID.match(key):
        ids = {key}
    else:
        ids = {s["trace_id"] for s in spans if _mentions(s, wanted)}
    traces: dict[str, list[Span]] = {}
    for span in spans:
        if span["trace_id"] in ids:
            traces.setdefault(span["trace_id"], []).append(span)
    return traces


def render(trace_id: str, spans: list[Span]) -> list[str]:
    """The tree, children under their parent, each line: offset, duration, name, where."""
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in by_id else None, []).append(span)
    for group in children.values():
        group.sort(key=lambda s: s.get("start_unix_nano", 0))
    start = min(s.get("start_unix_nano", 0) for s in spans)
    end = max(s.get("end_unix_nano", 0) for s in spans)
    services = sorted({str(s.get("service")) for s in spans})
    lines = [
        f"trace {trace_id}: {len(spans)} spans, {len(services)} services "
        f"({', '.join(services)}), {(end - start) / 1e6:.1f} ms"
    ]

    def walk(span: Span, prefix: str, last: bool, depth: int) -> None:
        offset = (span.get("start_unix_nano", start) - start) / 1e6
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        status = "  ERROR" if span.get("status") == "ERROR" else ""
        message = f" ({span['status_message']})" if status and span.get("status_message") else ""
        lines.append(
            f"  {offset:>8.1f}ms {float(span.get('duration_ms', 0)):>8.1f}ms  {prefix}{branch}"
            f"{span.get('name')}  [{span.get('service')} {span.get('version')}, "
            f"{str(span.get('kind', '')).lower()}]{status}{message}"
        )
        kids = children.get(span["span_id"], [])
        below = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        for index, child in enumerate(kids):
            walk(child, below, index == len(kids) - 1, depth + 1)

    for root in children.get(None, []):
        walk(root, "", True, 0)
    return lines


def trace(folder: Path, wanted: str) -> int:
    if not folder.is_dir():
        raise CommandError(f"no span files in {folder} (is the platform running?)")
    traces = find_traces(list(read_spans(folder)), wanted)
    if not traces:
        raise CommandError(
            f"no trace for {wanted!r} in {folder} (spans are written within a second; "
            "a sampled-out request has none)"
        )
    ordered = sorted(traces.items(), key=lambda kv: min(s["start_unix_nano"] for s in kv[1]))
    for index, (trace_id, spans) in enumerate(ordered):
        if index:
            print()
        print("\n".join(render(trace_id, spans)))
    return 0
