"""Running health checks (HTTP, TCP, TTL) and reaping services that stay critical.

Each live check has its own asyncio task. Probes report through ``Registry.update_check``,
which ignores a report from a check that has since been replaced or removed.
The status rules, output texts and first-run stagger follow Consul's ``agent/checks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import aiohttp
from multidict import CIMultiDict

from . import logs
from .definitions import CRITICAL, PASSING, WARNING, CheckDefinition, tcp_target
from .state import Check, Registry, UnknownCheckError, UnknownServiceError

USER_AGENT = "Consul Health Check"
OUTPUT_MAX_BYTES = 4 * 1024  # Consul keeps the last 4 KiB of a check's output
DEFAULT_REAP_INTERVAL = 0.5

Probe = Callable[[], Awaitable[tuple[str, str]]]
Runner = Callable[[], Coroutine[Any, Any, None]]


class NotTTLCheckError(LookupError):
    """pass/warn/fail was sent for a check that is not a TTL check."""


def status_for_http_code(code: int) -> str:
    """Consul's rule: 2xx passing, 429 Too Many Requests warning, anything else critical."""
    if 200 <= code <= 299:
        return PASSING
    if code == 429:
        return WARNING
    return CRITICAL


class StatusGate:
    """Consul's SuccessBeforePassing / FailuresBeforeWarning / FailuresBeforeCritical.

    Answers the status to record for a probe result, or ``None`` while a threshold has not
    been reached yet (the check keeps its current status and output).
    """

    def __init__(
        self,
        success_before_passing: int = 0,
        failures_before_warning: int = 0,
        failures_before_critical: int = 0,
    ) -> None:
        self._success_before_passing = success_before_passing
        self._failures_before_critical = failures_before_critical
        # Unset means "same as FailuresBeforeCritical", as in Consul.
        self._failures_before_warning = failures_before_warning or failures_before_critical
        self._successes = 0
        self._failures = 0

    @classmethod
    def for_check(cls, definition: CheckDefinition) -> StatusGate:
        return cls(
            definition.success_before_passing,
            definition.failures_before_warning,
            definition.failures_before_critical,
        )

    def apply(self, status: str) -> str | None:
        if status in (PASSING, WARNING):
            self._successes += 1
            self._failures = 0
            return status if self._successes >= self._success_before_passing else None
        self._failures += 1
        self._successes = 0
        if self._failures >= self._failures_before_critical:
            return status
        if self._failures >= self._failures_before_warning:
            return WARNING
        return None


def _go_error_op(method: str) -> str:
    # Go's url.Error prints the method as "Get", "Post", ...
    return method[:1].upper() + method[1:].lower()


def _describe_connect_error(exc: BaseException, host: str, port: int | None) -> str:
    errno = getattr(exc, "errno", None)
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
    reason = os.strerror(errno).lower() if isinstance(errno, int) and errno > 0 else str(exc)
    return f"dial tcp {host}:{port}: connect: {reason}"


async def _read_tail(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The last ``limit`` bytes of the body, without holding a huge body in memory."""
    tail = b""
    async for chunk in response.content.iter_chunked(64 * 1024):
        tail = (tail + chunk)[-limit:]
    return tail


async def probe_http(
    session: aiohttp.ClientSession, definition: CheckDefinition
) -> tuple[str, str]:
    method = (definition.method or "GET").upper()
    url = definition.http
    headers: CIMultiDict[str] = CIMultiDict()
    for name, values in definition.header.items():
        for value in values:
            headers.add(name, value)
    headers.setdefault("User-Agent", USER_AGENT)
    headers.setdefault("Accept", "text/plain, text/*, */*")
    timeout = aiohttp.ClientTimeout(total=definition.effective_timeout_ns / 1e9)
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            data=definition.body.encode() if definition.body else None,
            timeout=timeout,
            allow_redirects=not definition.disable_redirects,
            ssl=False if definition.tls_skip_verify else True,
        ) as response:
            body = await _read_tail(response, OUTPUT_MAX_BYTES)
            reason = response.reason or _reason_phrase(response.status)
            output = (
                f"HTTP {method} {url}: {response.status} {reason} "
                f"Output: {body.decode('utf-8', errors='replace')}"
            )
            return status_for_http_code(response.status), output
    except TimeoutError:
        return CRITICAL, (
            f'{_go_error_op(method)} "{url}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"
        )
    except aiohttp.ClientConnectorError as exc:
        detail = _describe_connect_error(exc, exc.host, exc.port)
        return CRITICAL, f'{_go_error_op(method)} "{url}": {detail}'
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return CRITICAL, f'{_go_error_op(method)} "{url}": {exc}'


def _reason_phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


async def probe_tcp(definition: CheckDefinition) -> tuple[str, str]:
    host, port = tcp_target(definition.tcp)
    try:
        async with asyncio.timeout(definition.effective_timeout_ns / 1e9):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return CRITICAL, f"dial tcp {definition.tcp}: i/o timeout"
    except OSError as exc:
        return CRITICAL, _describe_connect_error(exc, host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return PASSING, f"TCP connect {definition.tcp}: Success"


def _truncate_ttl_output(output: str) -> str:
    if len(output) <= OUTPUT_MAX_BYTES:
        return output
    return f"{output[:OUTPUT_MAX_BYTES]} ... (captured {OUTPUT_MAX_BYTES} of {len(output)} bytes)"


class _TTLRunner:
    """A TTL check: critical once its TTL passes without a pass/warn/fail update."""

    def __init__(self, registry: Registry, check: Check, ttl_seconds: float) -> None:
        self._registry = registry
        self._check = check
        self._ttl = ttl_seconds
        self._touched = asyncio.Event()
        self._last_output = ""

    def update(self, status: str, output: str) -> None:
        output = _truncate_ttl_output(output)
        self._registry.update_check(self._check, status, output)
        self._last_output = output
        self._touched.set()

    async def run(self) -> None:
        expired = False
        while True:
            try:
                if expired:
                    # Like Consul's timer: after expiring it only re-arms on the next update.
                    await self._touched.wait()
                else:
                    async with asyncio.timeout(self._ttl):
                        await self._touched.wait()
                self._touched.clear()
                expired = False
            except TimeoutError:
                expired = True
                output = "TTL expired"
                if self._last_output:
                    output += f" (last output before timeout follows): {self._last_output}"
                self._registry.update_check(self._check, CRITICAL, output)


class CheckManager:
    """Runs one task per live check and the reaper; the registry's ``CheckListener``."""

    def __init__(self, registry: Registry, *, reap_interval: float = DEFAULT_REAP_INTERVAL) -> None:
        self._registry = registry
        self._reap_interval = reap_interval
        self._session: aiohttp.ClientSession | None = None
        # Keyed by id(check); the Check is kept alongside so its id cannot be reused.
        self._tasks: dict[int, tuple[Check, asyncio.Task[None]]] = {}
        self._ttl: dict[int, _TTLRunner] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Consul disables keep-alive for HTTP checks so every probe opens a connection.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        self._session = aiohttp.ClientSession(connector=connector)
        self._registry.set_listener(self)
        for check in self._registry.agent_checks():
            self.check_added(check)
        self._reaper = asyncio.create_task(self._reap_loop(), name="devregistry-reaper")

    async def close(self) -> None:
        self._registry.set_listener(None)
        tasks = [task for _, task in self._tasks.values()]
        if self._reaper is not None:
            tasks.append(self._reaper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._ttl.clear()
        if self._session is not None:
            await self._session.close()

    # -- CheckListener -------------------------------------------------------------------

    def check_added(self, check: Check) -> None:
        definition = check.definition
        if definition is None:
            return
        runner: Runner
        if definition.kind == "ttl":
            ttl = _TTLRunner(self._registry, check, definition.ttl_ns / 1e9)
            self._ttl[id(check)] = ttl
            runner = ttl.run
        elif definition.kind == "http":
            runner = self._interval_runner(check, self._http_probe(definition))
        else:
            runner = self._interval_runner(check, lambda: probe_tcp(definition))
        task = asyncio.create_task(runner(), name=f"check {check.check_id}")
        self._tasks[id(check)] = (check, task)

    def check_removed(self, check: Check) -> None:
        entry = self._tasks.pop(id(check), None)
        self._ttl.pop(id(check), None)
        if entry is not None:
            entry[1].cancel()

    # -- TTL updates from the API --------------------------------------------------------

    def ttl_update(self, check_id: str, status: str, output: str) -> None:
        check = self._registry.checks.get(check_id)
        if check is None or check.definition is None:
            raise UnknownCheckError(check_id)
        runner = self._ttl.get(id(check))
        if runner is None:
            raise NotTTLCheckError(check_id)
        runner.update(status, output)

    # -- runners -------------------------------------------------------------------------

    def _http_probe(self, definition: CheckDefinition) -> Probe:
        async def probe() -> tuple[str, str]:
            assert self._session is not None, "CheckManager.start() was not awaited"
            return await probe_http(self._session, definition)

        return probe

    def _interval_runner(self, check: Check, probe: Probe) -> Runner:
        definition = check.definition
        assert definition is not None
        interval = definition.interval_ns / 1e9

        async def run() -> None:
            gate = StatusGate.for_check(definition)
            # Consul staggers the first run randomly within one interval.
            await asyncio.sleep(random.uniform(0, interval))
            while True:
                try:
                    status, output = await probe()
                except Exception as exc:  # a probe bug must not stop the check for good
                    logs.event("check probe failed", level=logging.ERROR, check_id=check.check_id)
                    status, output = CRITICAL, f"probe error: {exc}"
                recorded = gate.apply(status)
                if recorded is not None:
                    self._registry.update_check(check, recorded, output)
                await asyncio.sleep(interval)

        return run

    async def _reap_loop(self) -> None:
        # Consul sweeps every 30 s and never reaps sooner than 1 minute; this sweeps every
        # reap_interval and honours the configured value exactly, so tests can use "1s".
        while True:
            await asyncio.sleep(self._reap_interval)
            for service_id in self._registry.services_to_reap():
                with contextlib.suppress(UnknownServiceError):
                    self._registry.deregister_service(
                        service_id, reason="critical longer than DeregisterCriticalServiceAfter"
                    )
