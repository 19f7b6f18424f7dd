"""Fault injection driven by Consul KV ``mesh/faults/<service>`` for the fault drills.

An instance may also start with baseline faults of its own (``FAULT_LATENCY_MS``,
``FAULT_ERROR_RATE``: how a deliberately bad version is rolled out); the stronger of baseline
and KV applies. The key holds ``{"latency_ms": 200, "error_rate": 0.2}``; it is followed
with a blocking query, so a change applies within milliseconds. Deleting the key (or
writing ``{}``) turns KV faults off. Business routes get the latency and 500s through
:func:`fault_middleware`; probes, metrics and the OpenAPI document never do. Kafka
handlers get them from the consumer runner (an injected error there is retried, never
dead-lettered).
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


def faults_key(service: str) -> str:
    return f"mesh/faults/{service}"


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
    def __init__(self, service: str, metrics: Metrics, baseline: FaultSettings = NO_FAULTS) -> None:
        self.key = faults_key(service)
        self._metrics = metrics
        self.baseline = baseline
        self.current = baseline
        self._watch: BlockingWatch[bytes | None] | None = None
        self._task: asyncio.Task[None] | None = None

    def apply_raw(self, raw: bytes | None) -> None:
        """Take a new KV value; a malformed one turns faults off (and says so)."""
        if not raw:
            settings = NO_FAULTS
        else:
            try:
                settings = FaultSettings.model_validate_json(raw)
            except ValidationError as exc:
                log.warning("ignoring malformed %s: %s", self.key, exc.errors()[0]["msg"])
                settings = NO_FAULTS
        settings = combine(self.baseline, settings)
        if settings != self.current:
            log.info("fault settings changed", extra={"faults": settings.model_dump()})
        self.current = settings

    def start(self, client: consul.aio.Consul) -> None:
        self._watch = watch_kv(client, self.key)
        self._task = asyncio.create_task(self._follow(self._watch), name="faults-watch")

    async def _follow(self, watch: BlockingWatch[bytes | None]) -> None:
        async for raw in watch:
            self.apply_raw(raw)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

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
