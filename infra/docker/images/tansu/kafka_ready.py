"""Docker HEALTHCHECK of the tansu image: does the broker answer a Kafka ApiVersions request?

A TCP connect alone would pass before the broker serves; this speaks the protocol (request
header v1, ApiVersions v0, no body) with nothing but the standard library.

    python3 kafka_ready.py [host:port]      (default 127.0.0.1:9092)
"""

from __future__ import annotations

import socket
import struct
import sys

API_VERSIONS = 18
CORRELATION_ID = 0x6D657368  # "mesh"
CLIENT_ID = b"healthcheck"


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed by the broker")
        data += chunk
    return data


def api_versions(host: str, port: int, timeout: float = 2.5) -> int:
    """Return the error code of the broker's ApiVersions answer (0: it serves)."""
    header = struct.pack(">hhih", API_VERSIONS, 0, CORRELATION_ID, len(CLIENT_ID)) + CLIENT_ID
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(header)) + header)
        (size,) = struct.unpack(">i", read_exactly(sock, 4))
        answer = read_exactly(sock, size)
    correlation, error = struct.unpack(">ih", answer[:6])
    if correlation != CORRELATION_ID:
        raise OSError(f"answer to another request (correlation id {correlation})")
    return error


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    host, _, port = target.rpartition(":")
    try:
        error = api_versions(host or "127.0.0.1", int(port))
    except (OSError, ValueError, struct.error) as exc:
        print(f"kafka at {target} does not answer: {exc}", file=sys.stderr)
        return 1
    if error:
        print(f"kafka at {target} answered ApiVersions with error {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
