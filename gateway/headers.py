"""What the gateway changes in headers on the way through.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection and must not be
forwarded, nor may any header a ``Connection`` header names. The client's API key is a secret
between client and gateway, so upstreams never see it. Headers stay bytes end to end: they
are read from and written to the wire as they are, without a decode and encode per request.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway itself on the way in, never copied from the client.
REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"x-api-key",
    b"x-mesh-version",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
}
# The gateway frames the answer itself (length, date).
RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"server", b"date"}


def connection_listed(connection: bytes | None) -> frozenset[bytes]:
    """Header names a ``Connection`` header lists (``Connection: keep-alive, X-Foo``)."""
    if not connection:
        return frozenset()
    return frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())


def lines(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes], connection: bytes | None
) -> list[bytes]:
    """Encoded header lines of ``headers`` without ``drop`` and what ``connection`` lists."""
    if connection:
        drop = drop | connection_listed(connection)
    return [name + b": " + value + b"\r\n" for name, value in headers if name.lower() not in drop]


def forwarded(prior: bytes | None, peer: str, host: bytes | None) -> list[bytes]:
    """``X-Forwarded-For`` (appended to), ``-Proto`` and ``-Host`` for the upstream."""
    chain = prior + b", " + peer.encode() if prior else peer.encode()
    out = [b"X-Forwarded-For: " + chain + b"\r\n", b"X-Forwarded-Proto: http\r\n"]
    if host:
        out.append(b"X-Forwarded-Host: " + host + b"\r\n")
    return out


def response_connection(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"connection":
            return value
    return None
