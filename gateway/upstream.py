"""HTTP/1.1 to upstream instances over pooled keep-alive connections, parsed by llhttp.

A general-purpose client (aiohttp's) spent more time per request than everything else the
gateway does; a proxy needs much less of it. The request head arrives here already encoded
(the proxy decides every header), and the answer comes back as status, raw headers and body,
or, for streams, as chunks handed to a :class:`Sink` while they arrive.

Failures are told apart because the proxy's retry rules depend on them: ``connect`` (nothing
was sent), ``disconnect`` (the connection broke or the answer was malformed: the upstream may
have acted) and ``timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import httptools

Failure = Literal["connect", "disconnect", "timeout"]
# A timed-out exchange fails at most this long after its deadline.
TIMEOUT_RESOLUTION = 0.01
# Where an upstream lives: (host, port) over TCP, or a Unix socket path.
Address = tuple[str, int] | str


class UpstreamError(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure: Failure = failure


@dataclass(slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Sink(Protocol):
    """Receives a streamed answer: the head once, then body chunks, then the end."""

    def head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def chunk(self, data: bytes) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to one upstream; one request at a time."""

    def __init__(self, pool: UpstreamPool, address: Address) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers_seen: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._head_only = False
        self._status = 0
        self._framed = True  # the answer says where its body ends
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.pool.forget(self)
        if self._status >= 200 and not self._framed and exc is None:
            # No Content-Length and not chunked: the body ends where the connection does.
            self._complete(keep_alive=False)
        self._fail("disconnect", "the upstream closed the connection")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail("disconnect", f"malformed answer: {exc}")
            self.close()

    def pause_writing(self) -> None:  # requests are small; nothing to pause
        pass

    # -- llhttp callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        if self._status < 200:
            return  # an interim answer (103 Early Hints): the real one follows
        self._framed = self._status in (204, 304) or any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )
        if self._head_only:
            # llhttp cannot be told that a HEAD answer has no body: finish here and never
            # reuse the connection, whose parser now expects a body that will not come.
            self._complete(keep_alive=False)
        elif self._sink is not None:
            self._sink.head(self._status, self._headers)
            if self._headers_seen is not None and not self._headers_seen.done():
                self._headers_seen.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink.chunk(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:
            return
        self._complete(keep_alive=self.parser.should_keep_alive())

    # -- use by the pool ---------------------------------------------------------------------
    def _complete(self, keep_alive: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.reusable = keep_alive and not self._head_only
        waiter.set_result(Answer(self._status, self._headers, b"".join(self._body)))

    def _fail(self, failure: Failure, message: str) -> None:
        error = UpstreamError(failure, message)
        for future in (self._headers_seen, self._waiter):
            if future is not None and not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def start(
        self, data: bytes, *, head_only: bool, sink: Sink | None = None
    ) -> asyncio.Future[Answer]:
        assert self.transport is not None
        loop = self.pool.loop
        self._waiter = loop.create_future()
        self._headers_seen = loop.create_future() if sink is not None else None
        self._sink = sink
        self._head_only = head_only
        self._status = 0
        self.reusable = False
        self.transport.write(data)
        return self._waiter

    async def headers_seen(self) -> None:
        assert self._headers_seen is not None
        await self._headers_seen

    def timed_out(self) -> None:
        self._fail("timeout", "no answer in time")
        self.close()


class Deadlines:
    """The timeouts of exchanges, without a loop timer per request (making and cancelling
    one cost as much as a tenth of the rest of a proxied request).

    Exchanges with the same timeout get their deadlines in the order they start, so each
    timeout value keeps one queue in deadline order. A single loop timer wakes at the
    earliest deadline (after a wake-up, at most once per ``TIMEOUT_RESOLUTION``) and times
    out the exchanges still waiting; entries of finished exchanges leave the front of their
    queue as new ones come, so a queue holds about what is in flight.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queues: dict[float, deque[tuple[float, UpstreamConnection, asyncio.Future[Answer]]]]
        self.queues = {}
        self._timer: asyncio.TimerHandle | None = None
        self._wakes_at = 0.0

    def add(self, timeout: float, conn: UpstreamConnection, waiter: asyncio.Future[Answer]) -> None:
        deadline = self.loop.time() + timeout
        queue = self.queues.get(timeout)
        if queue is None:
            queue = self.queues[timeout] = deque()
        while queue and queue[0][2].done():
            queue.popleft()
        queue.append((deadline, conn, waiter))
        if self._timer is None or deadline < self._wakes_at:
            self._wake_at(deadline)

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wakes_at = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self.loop.time()
        earliest: float | None = None
        for queue in self.queues.values():
            while queue and (queue[0][0] <= now or queue[0][2].done()):
                _, conn, waiter = queue.popleft()
                if not waiter.done():
                    conn.timed_out()
            if queue and (earliest is None or queue[0][0] < earliest):
                earliest = queue[0][0]
        if earliest is not None:
            self._wake_at(max(earliest, now + TIMEOUT_RESOLUTION))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queues.clear()


class UpstreamPool:
    """Keep-alive connections by upstream address, at most ``limit`` open in all."""

    def __init__(
        self,
        *,
        limit: int,
        connect_timeout: float,
        keepalive: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.clock = clock
        self.open = 0
        self._idle: dict[Address, list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()
        self._slots: list[asyncio.Future[None]] = []
        self._closing = False
        self.deadlines = Deadlines(self.loop)

    async def acquire(self, address: Address) -> UpstreamConnection:
        while True:
            idle = self._idle.get(address)
            while idle:
                conn = idle.pop()  # the most recently used: warmest, least likely reaped
                if not conn.closed and conn.transport is not None:
                    if not conn.transport.is_closing():
                        return conn
            if self.open < self.limit:
                break
            # At the limit: an idle connection to another upstream gives its place up (its
            # close frees a slot), else wait for a connection to come back or close.
            self._close_one_idle()
            slot = self.loop.create_future()
            self._slots.append(slot)
            await slot
        self.open += 1
        try:
            return await asyncio.wait_for(self._connect(address), self.connect_timeout)
        except TimeoutError:
            self._release_slot()
            raise UpstreamError(
                "connect", f"no connection within {self.connect_timeout}s"
            ) from None
        except OSError as exc:
            self._release_slot()
            raise UpstreamError("connect", exc.strerror or str(exc)) from None

    def _close_one_idle(self) -> None:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()  # the least recently used
                return

    async def exchange(
        self, address: Address, data: bytes, *, timeout: float | None, head_only: bool = False
    ) -> Answer:
        """Send one encoded request and read the whole answer."""
        conn = await self.acquire(address)
        waiter = conn.start(data, head_only=head_only)
        if timeout:
            self.deadlines.add(timeout, conn, waiter)
        try:
            return await waiter
        finally:
            self.release(conn)

    async def open_stream(
        self, address: Address, data: bytes, sink: Sink
    ) -> tuple[UpstreamConnection, asyncio.Future[Answer]]:
        """Send one request; return once the answer's head went to ``sink``, with the
        connection and a future that ends with the stream. Release the connection after."""
        conn = await self.acquire(address)
        end = conn.start(data, head_only=False, sink=sink)
        try:
            await conn.headers_seen()
        except UpstreamError:
            self.release(conn)
            raise
        return conn, end

    async def _connect(self, address: Address) -> UpstreamConnection:
        def factory() -> UpstreamConnection:
            return UpstreamConnection(self, address)

        if isinstance(address, str):
            _, conn = await self.loop.create_unix_connection(factory, address)
        else:
            _, conn = await self.loop.create_connection(factory, address[0], address[1])
        self._all.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the idle list if the last exchange left it reusable, else closed."""
        if conn.reusable and not conn.closed and not self._closing:
            conn.idle_since = self.clock()
            self._idle.setdefault(conn.address, []).append(conn)
            self._wake_one()  # a request waiting for a slot may take this connection
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            idle = self._idle.get(conn.address)
            if idle and conn in idle:
                idle.remove(conn)
            self._release_slot()

    def _release_slot(self) -> None:
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._slots:
            slot = self._slots.pop(0)
            if not slot.done():
                slot.set_result(None)
                break

    def reap(self) -> None:
        """Close connections idle for longer than ``keepalive`` (before the upstream does)."""
        cutoff = self.clock() - self.keepalive
        for idle in self._idle.values():
            for conn in [c for c in idle if c.idle_since < cutoff]:
                conn.close()

    def close(self) -> None:
        self._closing = True
        self.deadlines.close()
        for conn in list(self._all):
            conn.close()
