"""Cheap, synchronous "does it really answer?" probes for each infrastructure part.

A listening socket is not enough: each probe speaks the part's own protocol.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.request
from urllib.parse import urlsplit


def kafka_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when some broker in ``bootstrap`` answers an ApiVersions request without error."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            if _api_versions_ok(host.strip("[]") or "127.0.0.1", int(port), timeout):
                return True
        except (OSError, ValueError, struct.error):
            continue
    return False


def _api_versions_ok(host: str, port: int, timeout: float) -> bool:
    client_id = b"meshctl"
    # ApiVersions (key 18) v0: header = api_key, api_version, correlation_id, client_id.
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        reply = _recv_exact(sock, size)
    correlation_id, error_code = struct.unpack(">ih", reply[:6])
    return correlation_id == 7 and error_code == 0


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks.extend(chunk)
    return bytes(chunks)


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis  # here: the supervisor and the console import this module (9 MB for a PING)

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def consul_url(addr: str) -> str:
    """``CONSUL_HTTP_ADDR`` may be ``host:port`` (Consul's own convention) or a URL."""
    return addr.rstrip("/") if "://" in addr else f"http://{addr.rstrip('/')}"


def consul_answers(addr: str, timeout: float = 1.0) -> bool:
    """True when the agent knows a leader, which is when Consul can answer catalog reads."""
    try:
        with urllib.request.urlopen(consul_url(addr) + "/v1/status/leader", timeout=timeout) as r:
            return r.status == 200 and bool(json.loads(r.read() or b'""'))
    except (OSError, ValueError):
        return False


def host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` or a URL into its host and port."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"not a host:port address: {address!r}")
    return parts.hostname, parts.port
