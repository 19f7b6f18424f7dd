"""The gateway's own HTTP/1.1 listener, spoken to over raw sockets: pipelining, framing,
malformed input, the control plane behind it, the access log and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from gw_support import Fleet, Gateway, start_gateway

from infra.embedded import Endpoints
from infra.process import async_wait_until, wait_until


@pytest.fixture
def orders(gateway: Gateway, fleet: Fleet) -> Iterator[None]:
    fleet.start(gateway.services["orders"])
    wait_until(lambda: _known(gateway), timeout=10, what="orders known to the gateway")
    yield


def _known(gateway: Gateway) -> bool:
    _, body = exchange(
        gateway,
        b"GET /admin/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + gateway.admin_token.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    return bool(json.loads(body)[gateway.services["orders"]]["instances"])


def connect(gateway: Gateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_answer(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> bytes:
    """Read one answer framed by Content-Length (or chunked) off ``sock``; return it whole
    and leave what follows in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before an answer")
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if head_only:
        length = 0
    while len(buffer) < end + length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside an answer")
        buffer += data
    answer = bytes(buffer[: end + length])
    del buffer[: end + length]
    return answer


def exchange(gateway: Gateway, raw: bytes) -> tuple[bytes, bytes]:
    with connect(gateway) as sock:
        sock.sendall(raw)
        answer = read_answer(sock, bytearray())
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def api_get(gateway: Gateway, path: str, extra: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: gw\r\nX-API-Key: {gateway.api_key}\r\n".encode()
        + extra
        + b"\r\n"
    )


def test_pipelined_requests_are_answered_in_order(gateway: Gateway, orders: None) -> None:
    requests = b"".join(api_get(gateway, f"/api/orders/{n}?delay_ms={30 - n}") for n in range(8))
    with connect(gateway) as sock:
        sock.sendall(requests)  # all at once: later ones finish upstream first
        buffer = bytearray()
        paths = []
        for _ in range(8):
            head, _, body = read_answer(sock, buffer).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            paths.append(json.loads(body)["path"])
    assert paths == [f"/orders/{n}" for n in range(8)]


def test_malformed_requests_get_a_400_and_the_connection_closes(gateway: Gateway) -> None:
    for raw in (
        b"GET /api/orders HTTP/1.1\r\nBad Header\r\n\r\n",
        b"NOT-A-METHOD / HTTP/1.1\r\n\r\n",
        b"GET /api/orders HTTP/9.9\r\n\r\n",
        # Request smuggling: both framings at once.
        b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ):
        with connect(gateway) as sock:
            sock.sendall(raw)
            answer = read_answer(sock, bytearray())
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), (raw, head)
            assert b"Connection: close" in head
            assert json.loads(body)["error"]["code"] == "bad_request"
            assert closed_by_peer(sock)


def test_absolute_targets_are_refused(gateway: Gateway) -> None:
    head, body = exchange(
        gateway, b"GET http://example.com/api/orders HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["code"] == "invalid_target"


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(gateway: Gateway) -> None:
    chunk = b"x" * 65536
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /api/orders HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + gateway.api_key.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer = b""
        try:
            for _ in range(8):  # 512 KiB against a 256 KiB limit
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: what we want
        answer = read_answer(sock, bytearray())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_expect_100_continue_is_honoured(gateway: Gateway, orders: None) -> None:
    body = b'{"customer_id": "c-1"}'
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /api/orders HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + gateway.api_key.encode()
            + b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
        )
        buffer = bytearray()
        interim = read_answer(sock, buffer)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        head, _, answer = read_answer(sock, buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    echoed = json.loads(answer)
    assert echoed["body"] == {"customer_id": "c-1"}
    assert "expect" not in echoed["headers"]  # the gateway answered it; not forwarded


def test_control_plane_paths_pass_through_and_head_has_no_body(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        buffer = bytearray()
        sock.sendall(b"HEAD /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_answer(sock, buffer, head_only=True)
        assert head.startswith(b"HTTP/1.1 200")
        length = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        assert int(length.split(b":")[1]) > 0  # the length the GET would have
        # The same connection goes on: the HEAD answer carried no body to confuse it.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = read_answer(sock, buffer).partition(b"\r\n\r\n")
        assert json.loads(body) == {"status": "ok"}
        assert b"X-Request-Id" in head
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, body = read_answer(sock, buffer).partition(b"\r\n\r\n")
        assert json.loads(body)["info"]["title"] == "mesh shop public API"
        sock.sendall(b"GET /admin/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, body = read_answer(sock, buffer).partition(b"\r\n\r\n")
        assert json.loads(body)["info"]["title"] == "mesh gateway (admin)"


def test_upgrade_requests_are_answered_then_closed(gateway: Gateway, orders: None) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            api_get(gateway, "/api/orders/1", b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
            + b"\x81\x05hello"
        )
        head, _, body = read_answer(sock, bytearray()).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert "upgrade" not in json.loads(body)["headers"]  # hop-by-hop: not forwarded
        assert closed_by_peer(sock)


def test_http_1_0_closes_unless_kept_alive(gateway: Gateway, orders: None) -> None:
    with connect(gateway) as sock:
        sock.sendall(f"GET /api/orders/1 HTTP/1.0\r\nX-API-Key: {gateway.api_key}\r\n\r\n".encode())
        assert read_answer(sock, bytearray()).startswith(b"HTTP/1.1 200")
        assert closed_by_peer(sock)


async def wait_served(session: aiohttp.ClientSession, gw: Gateway) -> None:
    """Until the gateway of a test of its own knows the orders instance and reaches it."""

    async def served() -> bool:
        async with session.get(gw.url + "/api/orders/1", headers=gw.key_headers) as r:
            return r.status == 200

    await async_wait_until(served, timeout=10, what="orders served")


async def test_access_log_lines_are_json_with_ids(
    infra: Endpoints, fleet: Fleet, tmp_path: Path
) -> None:
    gw = start_gateway(
        infra.env(), tmp_path / "logged", GATEWAY_ACCESS_LOG="true", LOG_LEVEL="INFO"
    )
    try:
        fleet.start(gw.services["orders"])
        async with aiohttp.ClientSession() as session:
            url = gw.url + "/api/orders/7"
            await wait_served(session, gw)
            async with session.get(
                url, headers={**gw.key_headers, "X-Request-Id": "req-access-1"}
            ) as r:
                assert r.status == 200
        log = tmp_path / "logged" / "gateway.log"

        def logged() -> dict | None:
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("request_id") == "req-access-1":
                    return entry
            return None

        entry = await async_wait_until(logged, timeout=5, what="the access log line")
        assert entry["logger"] == "gateway.access" and entry["status"] == 200
        assert entry["path"] == "/api/orders/7" and entry["route"] == "/api/orders"
        assert entry["upstream_version"] == "v1" and entry["attempts"] == 1
        assert len(entry["trace_id"]) == 32 and entry["duration_ms"] >= 0
    finally:
        gw.process.stop()


async def test_sigterm_lets_requests_in_progress_finish(
    infra: Endpoints, fleet: Fleet, tmp_path: Path
) -> None:
    gw = start_gateway(infra.env(), tmp_path / "drained")
    try:
        fleet.start(gw.services["orders"])
        async with aiohttp.ClientSession() as session:
            await wait_served(session, gw)

            async def slow() -> int:
                async with session.get(
                    gw.url + "/api/orders/slow?delay_ms=1500", headers=gw.key_headers
                ) as r:
                    await r.read()
                    return r.status

            in_progress = [asyncio.create_task(slow()) for _ in range(5)]

            async def all_upstream() -> bool:
                url = gw.url + "/admin/instances"
                async with session.get(url, headers=gw.admin_headers) as r:
                    listed = (await r.json())[gw.services["orders"]]["instances"]
                    return sum(i["outstanding"] for i in listed) == 5

            await async_wait_until(all_upstream, timeout=5, what="5 requests at the upstream")
            started = time.monotonic()
            assert gw.process.popen is not None
            gw.process.popen.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*in_progress)
            assert statuses == [200] * 5
            assert time.monotonic() - started < 5

            def refused() -> bool:
                try:
                    connect(gw).close()
                except OSError:
                    return True
                return False

            await async_wait_until(refused, timeout=10, what="the listener closed")
        assert await asyncio.to_thread(gw.process.popen.wait, 10) == 0
    finally:
        gw.process.stop()


def test_a_client_that_half_closes_still_gets_its_answer(gateway: Gateway, orders: None) -> None:
    with connect(gateway) as sock:
        sock.sendall(api_get(gateway, "/api/orders/1?delay_ms=200"))
        sock.shutdown(socket.SHUT_WR)  # done sending, as `nc -N` does
        head = read_answer(sock, bytearray())
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"Connection: close" in head
        assert closed_by_peer(sock)
