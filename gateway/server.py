"""The gateway's listener: HTTP/1.1 on asyncio protocols, parsed by llhttp (httptools).

Every request of a client connection is parsed here and handed, whole, to one handler (the
proxy); answers go back in order (pipelined requests wait their turn). What a general web
framework adds per request (routing tables, request objects, middleware chains) the proxy
does not need on its hot path, and it was most of the gateway's cost.

Protections: a body larger than the limit is refused (413) from its declared length, or as
soon as it grows past it; a malformed request gets a 400 and the connection is closed; a
connection idle for ``keepalive`` seconds, or stuck in the middle of a request for
``request_timeout`` seconds (slowloris), is closed. While draining, each connection closes
after its current answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

from services.common.errors import error_body
from services.common.middleware import request_id_for

log = logging.getLogger(__name__)

STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus if s.value >= 100
}
JSON = b"Content-Type: application/json; charset=utf-8\r\n"
LINGER = 2.0  # seconds a refused connection keeps reading before it closes


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode()


@dataclass(slots=True)
class Request:
    method: str
    url: bytes  # as sent: path and query, percent-encoded
    headers: list[tuple[bytes, bytes]]  # as sent, in order
    lookup: dict[bytes, bytes]  # lower-cased name -> value (repeated headers joined by ", ")
    body: bytes
    keep_alive: bool
    peer: str

    def header(self, name: bytes) -> str | None:
        value = self.lookup.get(name)
        return value.decode("latin-1") if value is not None else None


Handler = Callable[["ClientConnection", Request], Coroutine[Any, Any, None]]


class ClientConnection(asyncio.Protocol):
    """One client connection: parse requests, run the handler on each in turn, answer."""

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.closed = False
        self.busy = False
        self.in_request = False  # between the first byte of a request and its end
        self.last_active = server.clock()
        self.keep_alive = True
        self.write_paused: asyncio.Future[None] | None = None
        self.on_close: list[Callable[[], None]] = []
        self._queue: deque[Request] = deque()
        self._refusal: tuple[int, str, str] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._lookup: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        for callback in self.on_close:
            callback()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: whatever else arrives is not read
        self.last_active = self.server.clock()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket) are not proxied: answer the request, then close.
            self.keep_alive = False
        except httptools.HttpParserError as exc:
            if self._refusal is None:
                self._refuse(400, "bad_request", f"malformed HTTP request: {_reason(exc)}")

    def pause_writing(self) -> None:
        self.write_paused = self.server.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.write_paused = None

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_request = True
        self._url = b""
        self._headers = []
        self._lookup = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        key = name.lower()
        seen = self._lookup.get(key)
        self._lookup[key] = value if seen is None else seen + b", " + value

    def on_headers_complete(self) -> None:
        length = self._lookup.get(b"content-length")
        limit = self.server.max_body
        if length is not None and length.isdigit() and int(length) > limit:
            self._refuse(
                413, "payload_too_large", f"the body is {int(length)} bytes; the limit is {limit}"
            )
            return
        expect = self._lookup.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refusal is not None:
            return
        self._size += len(body)
        if self._size > self.server.max_body:
            self._refuse(
                413, "payload_too_large", f"the body is over the limit of {self.server.max_body}"
            )
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        self.in_request = False
        request = Request(
            method=self.parser.get_method().decode("ascii"),
            url=self._url,
            headers=self._headers,
            lookup=self._lookup,
            body=b"".join(self._body) if self._body else b"",
            keep_alive=self.parser.should_keep_alive(),
            peer=self.peer,
        )
        if self.busy:
            self._queue.append(request)
            if len(self._queue) >= 16 and self.transport is not None:
                self.transport.pause_reading()  # a client pipelining too far ahead waits
        else:
            self._run(request)

    # -- requests and answers ------------------------------------------------------------
    def _run(self, request: Request) -> None:
        self.busy = True
        if not request.keep_alive:
            self.keep_alive = False
        task = self.server.loop.create_task(self.server.handler(self, request))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.busy = False
        if self.server.draining:
            self.server.check_drained()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("unhandled error in the gateway", exc_info=exc)
            self.keep_alive = False
            if self.transport is not None and not self.closed:
                self.transport.close()
            return
        if self._refusal is not None:
            self._send_refusal()
        elif not self.keep_alive or self.server.draining:
            self.close()
        elif self._queue:
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
            self._run(self._queue.popleft())

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be read (malformed, too large) and close."""
        self._refusal = (status, code, message)
        self.keep_alive = False
        if self.transport is not None:
            self.transport.pause_reading()
        if not self.busy:
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, code, message = self._refusal
        self.server.on_refused(code)
        request_id = request_id_for(self._lookup.get(b"x-request-id", b"").decode("latin-1"))
        echo = f"X-Request-Id: {request_id}\r\n".encode()
        self.send_error(status, code, message, headers=[echo], keep_alive=False)
        self._linger()

    def _linger(self) -> None:
        """Close gently after refusing a request the client may still be sending: closing
        with its bytes unread would reset the connection, and a reset can destroy the answer
        before the client reads it. So: end our side, read (and drop) what still comes for a
        moment, close when the client does or after LINGER seconds (nginx's lingering
        close)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        transport.resume_reading()  # data_received drops everything once refused
        self.server.loop.call_later(LINGER, self.close)

    def eof_received(self) -> bool:
        if self.busy and self._refusal is None:
            # The client is done sending but waits for its answer: answer, then close.
            self.keep_alive = False
            return True
        return False  # close, after writing what is buffered

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def send(
        self,
        status: int,
        headers: list[bytes],
        body: bytes,
        *,
        keep_alive: bool = True,
        head: bool = False,
        length: int | None = None,
    ) -> None:
        """Write one whole answer; ``headers`` are encoded lines (``b"Name: value\\r\\n"``).
        ``length``: the Content-Length of a HEAD answer, whose body is not sent."""
        if self.transport is None or self.closed:
            return
        if not keep_alive or self.server.draining:
            self.keep_alive = False
        parts = [status_line(status), self.server.date_line, *headers]
        parts.append(b"Content-Length: %d\r\n" % (len(body) if length is None else length))
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if not head:
            parts.append(body)
        self.transport.write(b"".join(parts))

    def send_error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: list[bytes] | None = None,
        keep_alive: bool = True,
        head: bool = False,
    ) -> None:
        """The platform's JSON error shape, ``{"error": {"code", "message"}}``."""
        body = json.dumps(error_body(code, message)).encode()
        self.send(status, [JSON, *(headers or ())], body, keep_alive=keep_alive, head=head)

    # -- streamed answers ------------------------------------------------------------------
    def send_head(self, status: int, headers: list[bytes]) -> None:
        """Start a streamed answer: chunked transfer coding, the body follows in chunks."""
        if self.transport is None or self.closed:
            return
        parts = [status_line(status), self.server.date_line, *headers]
        parts.append(b"Transfer-Encoding: chunked\r\n")
        self.keep_alive = self.keep_alive and not self.server.draining
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        self.transport.write(b"".join(parts))

    def send_chunk(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(b"0\r\n\r\n")


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]


class FrontServer:
    """The listening socket and its connections; ``handler`` serves each request."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        keepalive: float = 75.0,
        request_timeout: float = 30.0,
        on_refused: Callable[[str], Any] = lambda code: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.max_body = max_body
        self.keepalive = keepalive
        self.request_timeout = request_timeout
        self.on_refused = on_refused
        self.clock = clock
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.date_line = b""
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self.tick_hooks: list[Callable[[], None]] = []

    async def start(self, host: str, port: int) -> None:
        self._tick()
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), host, port, backlog=1024, reuse_address=True
        )
        self._ticker = self.loop.create_task(self._every_second())

    def _tick(self) -> None:
        self.date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now = self.clock()
        for conn in list(self.connections):
            if conn.busy:
                continue
            idle_for = now - conn.last_active
            if (conn.in_request and idle_for > self.request_timeout) or (
                not conn.in_request and idle_for > self.keepalive
            ):
                conn.close()
        for hook in self.tick_hooks:
            hook()

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._tick()

    def check_drained(self) -> None:
        if not any(c.busy for c in self.connections):
            self._drained.set()

    async def stop(self, timeout: float) -> None:
        """Stop listening; let each connection finish its answer in progress, then close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        self.check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            log.warning("requests still in progress at the end of the drain; closing them")
        for conn in list(self.connections):
            conn.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.wait_closed()
