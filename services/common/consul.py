"""Consul: registering this instance, and following blocking queries (KV keys, healthy
instances of a service) — the gateway reuses :class:`BlockingWatch` for its routing table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import consul
import consul.aio

from services.common.backoff import Backoff, sleep_unless
from services.common.net import host_port

if TYPE_CHECKING:
    # Only a type here: the console and the supervisor use the watches and the client
    # without pydantic-settings (about 6 MB each).
    from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Fetch = Callable[[str | None, str], Awaitable[tuple[Any, T]]]


def consul_client(addr: str) -> consul.aio.Consul:
    """A client for ``http(s)://host:port`` (as normalised by the settings)."""
    parts = urlsplit(addr)
    return consul.aio.Consul(
        host=parts.hostname or "127.0.0.1", port=parts.port or 8500, scheme=parts.scheme or "http"
    )


def go_duration(seconds: float) -> str:
    """Consul wants Go durations; milliseconds keep sub-second settings exact."""
    return f"{round(seconds * 1000)}ms"


class ConsulRegistration:
    """Registers the instance (ID ``<name>-<host>-<port>``) with ``Meta.version``, tags and an
    HTTP check on ``/readyz`` (a TCP check with ``READINESS_PROBE=none``); keeps it
    registered; deregisters on stop.

    Registration runs in the background with retries, so a registry that is down or slow
    never blocks start-up, and it is repeated whenever the registry has lost it (a dev
    registry keeps its state in memory).
    """

    def __init__(self, client: consul.aio.Consul, settings: ServiceSettings) -> None:
        self._client = client
        self._settings = settings
        self.service_id = settings.instance_id
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()

    def definition(self) -> dict[str, Any]:
        s = self._settings
        timing = {
            "interval": go_duration(s.CHECK_INTERVAL),
            "timeout": go_duration(s.CHECK_TIMEOUT),
            "deregister": go_duration(s.DEREGISTER_CRITICAL_AFTER),
        }
        if s.READINESS_PROBE == "none":
            # No readiness probe: the port answering is all the registry learns.
            check = consul.Check.tcp(s.advertise_address, s.PORT, **timing)
        else:
            check_url = f"http://{host_port(s.advertise_address, s.PORT)}/readyz"
            check = consul.Check.http(check_url, **timing)
        check["FailuresBeforeCritical"] = s.CHECK_FAILURES_BEFORE_CRITICAL
        return {
            "name": s.SERVICE_NAME,
            "service_id": self.service_id,
            "address": s.advertise_address,
            "port": s.PORT,
            "tags": s.tags,
            "meta": {"version": s.SERVICE_VERSION},
            "check": check,
        }

    async def register(self) -> None:
        await self._client.agent.service.register(**self.definition())
        self.registered.set()
        log.info("registered in consul", extra={"service_id": self.service_id})

    async def _is_registered(self) -> bool:
        services = await self._client.agent.services()
        return self.service_id in (services or {})

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_registered(), name="consul-registration")

    async def _keep_registered(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._stop.is_set():
            try:
                if not self.registered.is_set() or not await self._is_registered():
                    await self.register()
                backoff.reset()
                delay = self._settings.REGISTRATION_REFRESH
            except Exception as exc:  # registry down or answering garbage: retry later
                delay = backoff.next()
                log.warning("consul registration failed: %s; retrying in %.2fs", exc, delay)
            await sleep_unless(self._stop, delay)

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop refreshing and deregister (idempotent)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.registered.is_set():
            self.registered.clear()
            try:
                await asyncio.wait_for(
                    self._client.agent.service.deregister(self.service_id), timeout
                )
                log.info("deregistered from consul", extra={"service_id": self.service_id})
            except Exception as exc:
                # DeregisterCriticalServiceAfter removes it once its check stays critical.
                log.warning("consul deregistration failed: %s", exc)


class BlockingWatch(Generic[T]):
    """Follows one Consul blocking query and yields its value each time it changes.

    Rules from Consul's blocking-query documentation: pass the last ``X-Consul-Index`` back;
    reset it when it goes backwards (the registry restarted); never send an index below 1;
    do not treat a return as a change (compare the value); back off on errors. ``stop()``
    ends the iteration at once, even in the middle of a long poll.

        watch = watch_kv(client, "mesh/faults/orders")
        async for value in watch:   # bytes, or None while the key does not exist
            ...
    """

    def __init__(self, fetch: Fetch[T], *, name: str, wait: float = 30.0) -> None:
        self._fetch = fetch
        self.name = name
        self._wait = go_duration(wait)
        self._stop = asyncio.Event()
        self._min_spacing = 0.05

    def stop(self) -> None:
        self._stop.set()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[T]:
        index: int | None = None
        last: Any = _UNSET
        backoff = Backoff(base=0.1, cap=5.0)
        failing = False
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                request = asyncio.ensure_future(
                    self._fetch(str(index) if index else None, self._wait)
                )
                await asyncio.wait({request, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not request.done():
                    request.cancel()
                    await asyncio.gather(request, return_exceptions=True)
                    return
                try:
                    raw_index, value = request.result()
                except Exception as exc:
                    if not failing:
                        log.warning("consul watch %s failing: %s", self.name, exc)
                        failing = True
                    await sleep_unless(self._stop, backoff.next())
                    continue
                if failing:
                    log.info("consul watch %s recovered", self.name)
                    failing = False
                backoff.reset()
                new_index = _as_index(raw_index)
                index = None if index is not None and new_index < index else max(new_index, 1)
                if value != last:
                    last = value
                    yield value
                elif time.monotonic() - started < self._min_spacing:
                    # An answer that came back at once without a change: do not spin.
                    await sleep_unless(self._stop, self._min_spacing)
        finally:
            stopped.cancel()

    async def run(self, callback: Callable[[T], Awaitable[None]]) -> None:
        """Call ``callback`` with every new value until stopped; a failing callback is
        logged and the watch goes on."""
        async for value in self:
            try:
                await callback(value)
            except Exception:
                log.exception("consul watch %s: callback failed", self.name)


class _Unset:
    pass


_UNSET = _Unset()


def _as_index(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def watch_kv(
    client: consul.aio.Consul, key: str, *, wait: float = 30.0
) -> BlockingWatch[bytes | None]:
    """The value of ``key`` (``None`` while it does not exist)."""

    async def fetch(index: str | None, wait_for: str) -> tuple[Any, bytes | None]:
        found_index, item = await client.kv.get(key, index=index, wait=wait_for)
        return found_index, (item or {}).get("Value")

    return BlockingWatch(fetch, name=f"kv:{key}", wait=wait)


def watch_service(
    client: consul.aio.Consul,
    service: str,
    *,
    passing: bool = True,
    tag: str | None = None,
    wait: float = 30.0,
) -> BlockingWatch[list[dict[str, Any]]]:
    """The instances of ``service`` (``[{Node, Service, Checks}]``), healthy ones only by
    default, sorted by service ID so a reordering alone is not a change."""

    async def fetch(index: str | None, wait_for: str) -> tuple[Any, list[dict[str, Any]]]:
        found_index, nodes = await client.health.service(
            service, index=index, wait=wait_for, passing=passing, tag=tag
        )
        return found_index, sorted(nodes or [], key=lambda n: str(n["Service"]["ID"]))

    return BlockingWatch(fetch, name=f"service:{service}", wait=wait)
