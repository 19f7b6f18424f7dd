"""What the gateway changes in headers on the way through.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection and must not be
forwarded, nor may any header a ``Connection`` header names. The client's API key is a secret
between client and gateway, so upstreams never see it.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself on the way in (or recomputed by aiohttp), never copied.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-api-key", "x-mesh-version"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "content-encoding", "server", "date"}


def _connection_listed(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def upstream_request_headers(
    incoming: CIMultiDictProxy[str], peer: str | None, scheme: str, host: str | None
) -> CIMultiDict[str]:
    drop = _REQUEST_DROP | _connection_listed(incoming)
    out: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in incoming.items() if k.lower() not in drop
    )
    prior = incoming.get("X-Forwarded-For")
    if peer:
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = scheme
    if host:
        out["X-Forwarded-Host"] = host
    return out


def client_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = _RESPONSE_DROP | _connection_listed(upstream)
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in drop)
