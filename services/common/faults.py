"""Fault injection driven by Consul KV ``mesh/faults/<service>`` for the fault drills.

An instance may also start with baseline faults of its own (``FAULT_LATENCY_MS``,
``FAULT_ERROR_RATE``: how a deliberately bad version is rolled out); the stronger of baseline
and KV applies. The key holds ``{"latency_ms": 200, "error_rate": 0.2}``; it is followed
with a blocking query, so a change applies within milliseconds.
``mesh/faults/<service>/<version>`` does the same for the instances of one version only (the
stronger of the two keys applies). Deleting a key (or writing ``{}``) turns its faults off.
Business routes get the latency and 500s through :func:`fault_middleware`; probes, metrics
and the OpenAPI document never do. Kafka handlers get them from the consumer runner (an
injected error there is retried, never dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Annotated

import consul.aio
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.consul import BlockingWatch, watch_kv
from services.common.errors import json_error
from services.common.metrics import Metrics

log = logging.getLogger(__name__)

FAULT_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


def faults_key(service: str, version: str | None = None) -> str:
    """The service's key, or the key of one of its versions."""
    return f"mesh/faults/{service}" + (f"/{version}" if version else "")


class FaultSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.error_rate > 0


NO_FAULTS = FaultSettings()


class InjectedFault(Exception):
    """An error injected on purpose by a drill."""


def combine(baseline: FaultSettings, live: FaultSettings) -> FaultSettings:
    """The stronger of each fault: a version's own baseline (a deliberately bad release)
    stays in force while a drill adds faults to the whole service through KV."""
    return FaultSettings(
        latency_ms=max(baseline.latency_ms, live.latency_ms),
        error_rate=max(baseline.error_rate, live.error_rate),
    )


class FaultInjector:
    def __init__(
        self,
        service: str,
        metrics: Metrics,
        baseline: FaultSettings = NO_FAULTS,
        version: str | None = None,
    ) -> None:
        self.key = faults_key(service)
        self.version_key = faults_key(service, version) if version else None
        self._metrics = metrics
        self.baseline = baseline
        self.current = baseline
        self._live: dict[str, FaultSettings] = {}
        self._watches: list[BlockingWatch[bytes | None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def apply_raw(self, raw: bytes | None, key: str | None = None) -> None:
        """Take a new value of ``key`` (the service's by default); a malformed one turns that
        key's faults off (and says so)."""
        key = key or self.key
        if not raw:
            settings = NO_FAULTS
        else:
            try:
                settings = FaultSettings.model_validate_json(raw)
            except ValidationError as exc:
                log.warning("ignoring malformed %s: %s", key, exc.errors()[0]["msg"])
                settings = NO_FAULTS
        self._live[key] = settings
        combined = self.baseline
        for live in self._live.values():
            combined = combine(combined, live)
        if combined != self.current:
            log.info("fault settings changed", extra={"faults": combined.model_dump()})
        self.current = combined

    def start(self, client: consul.aio.Consul) -> None:
        for key in filter(None, (self.key, self.version_key)):
            watch = watch_kv(client, key)
            self._watches.append(watch)
            self._tasks.append(
                asyncio.create_task(self._follow(watch, key), name=f"faults-watch {key}")
            )

    async def _follow(self, watch: BlockingWatch[bytes | None], key: str) -> None:
        async for raw in watch:
            self.apply_raw(raw, key)

    async def stop(self) -> None:
        for watch in self._watches:
            watch.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    async def inject(self) -> None:
        """Sleep the configured latency, then raise :class:`InjectedFault` at the error rate."""
        faults = self.current
        if not faults.active:
            return
        if faults.latency_ms > 0:
            self._metrics.faults_injected.labels(**self._metrics.base, kind="latency").inc()
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.error_rate > 0 and random.random() < faults.error_rate:
            self._metrics.faults_injected.labels(**self._metrics.base, kind="error").inc()
            raise InjectedFault(f"fault injected from {self.key}")


def fault_middleware(injector: FaultInjector) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in FAULT_EXEMPT_PATHS:
            return await handler(request)
        try:
            await injector.inject()
        except InjectedFault as exc:
            return json_error(500, "injected_fault", str(exc))
        return await handler(request)

    return middleware
