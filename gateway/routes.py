"""The route table (``routes.toml``): which public paths reach which service, and how."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROUTES_FILE = Path(__file__).with_name("routes.toml")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_SERVICE = re.compile(r"^[a-z][a-z0-9-]*$")


class RouteError(ValueError):
    """The route table is malformed; the message names the route and the field."""


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    upstream: str
    timeout: float | None  # seconds per attempt; None: no limit
    retry: Literal["safe", "never"]
    methods: frozenset[str]

    def upstream_path(self, path: str) -> str:
        """``/api/orders/42`` on prefix ``/api/orders`` -> ``/orders/42``."""
        return self.upstream + path[len(self.prefix) :]

    def may_retry(self, method: str, has_idempotency_key: bool) -> bool:
        if self.retry == "never":
            return False
        return method in SAFE_METHODS or has_idempotency_key

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "service": self.service,
            "upstream": self.upstream,
            "timeout_s": self.timeout,
            "retry": self.retry,
            "methods": sorted(self.methods),
        }


def parse_duration(text: str, where: str) -> float | None:
    match = _DURATION.match(text.strip())
    if match is None:
        raise RouteError(f"{where}: timeout {text!r} is not a duration like 500ms, 2s or 1m")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return seconds or None


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        # Longest prefix first, so /api/notifications/stream wins over /api/notifications.
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._prefixes = [(r.prefix, r.prefix + "/", r) for r in self.routes]

    @classmethod
    def load(cls, path: Path = ROUTES_FILE) -> RouteTable:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RouteError(f"{path}: {exc}") from None
        return cls([_parse_route(i, raw) for i, raw in enumerate(data.get("route", []))])

    @property
    def services(self) -> list[str]:
        return sorted({r.service for r in self.routes})

    def match(self, path: str) -> Route | None:
        for prefix, below, route in self._prefixes:
            if path == prefix or path.startswith(below):
                return route
        return None


def _parse_route(index: int, raw: dict[str, Any]) -> Route:
    where = f"route #{index + 1}"
    try:
        prefix, service, upstream = raw["prefix"], raw["service"], raw["upstream"]
    except KeyError as exc:
        raise RouteError(f"{where}: missing field {exc.args[0]!r}") from None
    if not (prefix.startswith("/") and not prefix.endswith("/")):
        raise RouteError(f"{where}: prefix {prefix!r} must start and not end with '/'")
    if not _SERVICE.match(service):
        raise RouteError(f"{where}: service {service!r} is not a service name")
    retry = raw.get("retry", "safe")
    if retry not in ("safe", "never"):
        raise RouteError(f"{where}: retry must be 'safe' or 'never', not {retry!r}")
    methods = frozenset(m.upper() for m in raw.get("methods", ["GET"]))
    return Route(
        prefix=prefix,
        service=service,
        upstream=upstream.rstrip("/") or "/",
        timeout=parse_duration(raw.get("timeout", "5s"), where),
        retry=retry,
        methods=methods,
    )
