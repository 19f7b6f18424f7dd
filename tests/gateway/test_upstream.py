"""The gateway's upstream client against raw upstreams on loopback that answer exactly as
each test scripts: keep-alive reuse, close-delimited bodies, HEAD, the three failure kinds,
and the connection limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.upstream import UpstreamError, UpstreamPool

GET = b"GET /x HTTP/1.1\r\nHost: up\r\n\r\n"
HEAD = b"HEAD /x HTTP/1.1\r\nHost: up\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


class RawUpstream:
    """A loopback server running ``script`` on every connection; counts connections."""

    def __init__(self, script: Callable[..., object]) -> None:
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)  # type: ignore[misc]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstreams = UpstreamPool(limit=10, connect_timeout=1.0)
    yield upstreams
    upstreams.close()


async def test_keep_alive_connections_are_reused(pool: UpstreamPool) -> None:
    async def answer_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)

    upstream = RawUpstream(answer_forever)
    async with upstream as address:
        for _ in range(3):
            answer = await pool.exchange(address, GET, timeout=2)
            assert (answer.status, answer.body) == (200, b"hello")
    assert upstream.connections == 1


async def test_a_body_without_length_ends_with_the_connection(pool: UpstreamPool) -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        await writer.drain()

    upstream = RawUpstream(close_delimited)
    async with upstream as address:
        answer = await pool.exchange(address, GET, timeout=2)
        assert (answer.status, answer.body) == (200, b"all of it")
        await pool.exchange(address, GET, timeout=2)
    assert upstream.connections == 2  # not reused: it was closed


async def test_head_answers_end_at_their_headers(pool: UpstreamPool) -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")

    async with RawUpstream(head) as address:
        started = time.monotonic()
        answer = await pool.exchange(address, HEAD, timeout=2, head_only=True)
        assert answer.status == 200 and answer.body == b""
        assert time.monotonic() - started < 1  # not waiting for 10 bytes that never come


async def test_the_three_failure_kinds(pool: UpstreamPool) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()

    async with RawUpstream(silent) as address:
        started = time.monotonic()
        with pytest.raises(UpstreamError) as timeout:
            await pool.exchange(address, GET, timeout=0.3)
        assert timeout.value.failure == "timeout"
        assert 0.3 <= time.monotonic() - started < 2
    async with RawUpstream(cut) as address:
        with pytest.raises(UpstreamError) as disconnect:
            await pool.exchange(address, GET, timeout=2)
        assert disconnect.value.failure == "disconnect"
    closed = RawUpstream(cut)
    async with closed as address:
        pass  # the port is free again: nothing listens
    with pytest.raises(UpstreamError) as connect:
        await pool.exchange(address, GET, timeout=2)
    assert connect.value.failure == "connect"
    assert pool.open == 0  # every failed connection gave its slot back


async def test_requests_wait_for_a_slot_under_the_limit() -> None:
    limited = UpstreamPool(limit=1, connect_timeout=1.0)
    in_flight = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        while True:
            await read_request(reader)
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.05)  # the upstream's own work, not the test waiting
            in_flight -= 1
            writer.write(OK)

    try:
        async with RawUpstream(slow) as address:
            answers = await asyncio.gather(
                *(limited.exchange(address, GET, timeout=2) for _ in range(4))
            )
        assert [a.body for a in answers] == [b"hello"] * 4
        assert most == 1 and limited.open <= 1
    finally:
        limited.close()


async def test_timeouts_share_one_timer_and_each_fires_on_its_own_deadline(
    pool: UpstreamPool,
) -> None:
    async def by_path(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            if request.startswith(b"GET /silent"):
                await reader.read()  # never answers
                return
            writer.write(OK)

    def get(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: up\r\n\r\n".encode()

    async with RawUpstream(by_path) as address:
        started = time.monotonic()
        long_wait = asyncio.ensure_future(pool.exchange(address, get("/silent"), timeout=3))
        await asyncio.sleep(0.05)  # the long deadline is armed first
        answered = await asyncio.gather(
            *(pool.exchange(address, get("/ok"), timeout=0.4) for _ in range(20))
        )
        assert [a.body for a in answered] == [b"hello"] * 20
        # A shorter deadline than the one the timer waits for still fires on time.
        with pytest.raises(UpstreamError) as short:
            await pool.exchange(address, get("/silent"), timeout=0.4)
        assert short.value.failure == "timeout"
        assert 0.4 <= time.monotonic() - started < 2.5
        assert not long_wait.done()  # its own deadline has not come
        with pytest.raises(UpstreamError) as long:
            await long_wait
        assert long.value.failure == "timeout"
        assert time.monotonic() - started >= 3
    # Finished exchanges do not pile up: only what was in flight is left to expire.
    assert sum(len(q) for q in pool.deadlines.queues.values()) <= 1
