"""Healthy instances and traffic weights, followed from Consul with blocking queries.

One watch per routed service on ``/v1/health/service/<name>?passing`` and one on the KV key
``mesh/traffic/<name>``: the gateway learns of a change as soon as Consul does and never asks
Consul anything while serving a request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import consul.aio

from gateway.balancer import OutlierPolicy, Pool, Strategy
from services.common.consul import BlockingWatch, watch_kv, watch_service

log = logging.getLogger(__name__)

TRAFFIC_PREFIX = "mesh/traffic/"
VERSION = re.compile(r"^v\d+$")


class WeightsError(ValueError):
    """A weights document is malformed; the message says how."""


def parse_weights(raw: bytes | str | None) -> dict[str, int] | None:
    """``{"v1": 90, "v2": 10}`` -> weights; ``None`` (no key) means "no preference"."""
    if raw is None or raw in (b"", ""):
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise WeightsError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise WeightsError('expected an object like {"v1": 90, "v2": 10}')
    weights: dict[str, int] = {}
    for version, weight in data.items():
        if not VERSION.match(str(version)):
            raise WeightsError(f"{version!r} is not a version like v1")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise WeightsError(f"weight of {version} must be an integer 0-100, got {weight!r}")
        weights[version] = weight
    if sum(weights.values()) == 0:
        raise WeightsError("at least one weight must be above 0")
    return weights


def instances_of(nodes: Iterable[dict[str, Any]]) -> list[tuple[str, str, int, str]]:
    """(id, address, port, version) of each entry of a health answer."""
    found = []
    for node in nodes:
        service = node["Service"]
        address = service.get("Address") or node["Node"].get("Address", "127.0.0.1")
        version = (service.get("Meta") or {}).get("version", "v1")
        found.append((service["ID"], address, int(service["Port"]), version))
    return found


class Discovery:
    """A :class:`Pool` and the traffic weights of every routed service, kept current."""

    def __init__(
        self,
        client: consul.aio.Consul,
        services: Iterable[str],
        *,
        strategy: Strategy,
        policy: OutlierPolicy,
    ) -> None:
        self.client = client
        self.pools = {name: Pool(name, strategy=strategy, policy=policy) for name in services}
        self.weights: dict[str, dict[str, int] | None] = {name: None for name in self.pools}
        self.weight_errors: dict[str, str] = {}
        self._synced: set[str] = set()
        # Called after every change of instances or weights (the public document follows).
        self.listeners: list[Callable[[], None]] = []
        self._watches: list[BlockingWatch[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def synced(self) -> bool:
        """True once every service's instances and weights have been read at least once."""
        return len(self._synced) == 2 * len(self.pools)

    def start(self) -> None:
        for name in self.pools:
            health = watch_service(self.client, name, passing=True)
            traffic = watch_kv(self.client, TRAFFIC_PREFIX + name)
            self._watches += [health, traffic]
            self._tasks.append(asyncio.create_task(self._follow_health(name, health)))
            self._tasks.append(asyncio.create_task(self._follow_traffic(name, traffic)))

    async def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow_health(self, name: str, watch: BlockingWatch[list[dict[str, Any]]]) -> None:
        async for nodes in watch:
            found = instances_of(nodes)
            self.pools[name].replace(found)
            self._synced.add(f"health:{name}")
            self._notify()
            log.info(
                "instances changed",
                extra={"upstream": name, "instances": [f"{i[1]}:{i[2]} {i[3]}" for i in found]},
            )

    async def _follow_traffic(self, name: str, watch: BlockingWatch[bytes | None]) -> None:
        async for raw in watch:
            try:
                self.weights[name] = parse_weights(raw)
                self.weight_errors.pop(name, None)
                log.info("traffic weights", extra={"upstream": name, "weights": self.weights[name]})
            except WeightsError as exc:
                # Keep routing by the last good weights rather than guess at a broken document.
                self.weight_errors[name] = str(exc)
                log.warning(
                    "ignoring bad traffic weights", extra={"upstream": name, "error": str(exc)}
                )
            self._synced.add(f"traffic:{name}")
            self._notify()

    def _notify(self) -> None:
        for listener in self.listeners:
            listener()
