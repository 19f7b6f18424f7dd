"""The JSON access log, one line per proxied request, written in batches.

The lines look like the kit's JSON logs (``ts``, ``level``, ``service``, ``logger``,
``message``, trace and request ids) so one query reads both. Going through ``logging`` cost a
record, a formatter pass and a write system call per request; here a line is formatted
directly (only the strings a client chose are escaped) into a buffer that is written at most
a second later, or sooner once it holds 256 lines (nginx's ``access_log ... buffer= flush=``
does the same).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring as _quote  # type: ignore[attr-defined]
from typing import TextIO

FLUSH_LINES = 256


class AccessLog:
    def __init__(self, service: str, version: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._fixed = (
            f'"level": "info", "service": {_quote(service)}, "version": {_quote(version)}, '
            '"logger": "gateway.access", "message": "access"'
        )
        self._lines: list[str] = []
        self._second = -1
        self._second_text = ""

    def _timestamp(self) -> str:
        """ISO 8601 with milliseconds, like the kit's logs; the date part once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def write(
        self,
        *,
        method: str,
        path: str,
        status: int,
        route: str | None,
        upstream: str | None,
        upstream_version: str,
        attempts: int,
        duration_ms: float,
        client: str,
        request_id: str,
        trace_id: str | None,
        span_id: str | None,
    ) -> None:
        ts = self._timestamp()
        line = (
            f'{{"ts": "{ts}", {self._fixed}, "method": {_quote(method)}, '
            f'"path": {_quote(path)}, "status": {status}, '
            f'"route": {_quote(route) if route else "null"}, '
            f'"upstream": {_quote(upstream) if upstream else "null"}, '
            f'"upstream_version": {_quote(upstream_version)}, "attempts": {attempts}, '
            f'"duration_ms": {duration_ms:.2f}, "client": {_quote(client)}, '
            f'"request_id": {_quote(request_id)}'
        )
        if trace_id is not None:
            line += f', "trace_id": "{trace_id}", "span_id": "{span_id}"'
        self._lines.append(line + "}")
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or gone: the access log is not worth failing requests for
