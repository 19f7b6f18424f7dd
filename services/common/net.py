"""Addresses in URLs and Host headers: an IPv6 literal goes in brackets (RFC 3986), as a pod
address on an IPv6 or dual-stack cluster is one."""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """``10.0.0.5:8080``, ``[fd00::5]:8080``, ``orders:8080``."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
