"""The kit's deliberate defects (a release's warm-up, a memory leak) and its readiness probe
setting, on a real aiohttp server on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psutil
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from services.common.app import LIFECYCLE, REGISTRATION, create_app
from services.common.consul import ConsulRegistration
from services.common.defects import Leak
from services.common.settings import ServiceSettings

MIB = 1024**2


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


def build(**settings: object) -> web.Application:
    config = ServiceSettings(SERVICE_NAME="defects", CONSUL_HTTP_ADDR="", **settings)  # type: ignore[arg-type]
    app = create_app(config, use_redis=False, use_kafka=False, faults=False)
    app.router.add_get("/hello", hello)
    return app


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as client:
        yield client


async def test_a_warming_release_is_unready_and_slow_until_warm(session: ClientSession) -> None:
    app = build(WARMUP_SECONDS="1.5")
    async with TestServer(app, host="127.0.0.1") as server:
        started = time.monotonic()
        async with session.get(server.make_url("/readyz")) as response:
            body = await response.json()
            assert response.status == 503 and body["status"] == "warming", body
        # Liveness is not readiness: the process is fine, only not warm.
        async with session.get(server.make_url("/healthz")) as response:
            assert response.status == 200
        async with session.get(server.make_url("/hello")) as response:
            assert response.status == 200
        waited = time.monotonic() - started
        assert 1.2 <= waited < 3.0, f"a request before the warm-up ended took {waited:.2f}s"
        async with session.get(server.make_url("/readyz")) as response:
            assert response.status == 200
        quick = time.monotonic()
        async with session.get(server.make_url("/hello")) as response:
            assert response.status == 200
        assert time.monotonic() - quick < 0.5


async def test_no_warmup_by_default(session: ClientSession) -> None:
    app = build()
    async with TestServer(app, host="127.0.0.1") as server:
        async with session.get(server.make_url("/readyz")) as response:
            assert response.status == 200
    assert app[LIFECYCLE].warmup.warm.is_set()


def test_the_leak_keeps_resident_memory_and_stops_at_its_bound() -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    leak = Leak(per_request=4 * MIB, limit=40 * MIB)
    for _ in range(20):
        leak.take()
    assert leak.total == 40 * MIB  # ten takes, then the bound
    grown = process.memory_info().rss - before
    assert grown >= 36 * MIB, f"RSS grew by {grown / MIB:.1f} MiB only: pages not resident?"
    assert Leak(per_request=0, limit=MIB).kept == []


async def test_leaking_requests_only_business_ones(session: ClientSession) -> None:
    app = build(LEAK_BYTES_PER_REQUEST="1Mi", LEAK_MAX_BYTES="8Mi")
    leak = app[LIFECYCLE].leak
    async with TestServer(app, host="127.0.0.1") as server:
        for _ in range(5):
            async with session.get(server.make_url("/readyz")) as response:
                assert response.status == 200
        assert leak.total == 0, "probes must not leak"
        for _ in range(12):
            async with session.get(server.make_url("/hello")) as response:
                assert response.status == 200
    # 8 of the 12 requests leaked 1 MiB each, then the release's own bound held. (Whether the
    # kept bytes are resident is the test above: here the allocator may reuse pages an
    # earlier test freed, so this process's RSS says little.)
    assert leak.total == 8 * MIB
    assert len(leak.kept) == 8 and all(len(chunk) == MIB for chunk in leak.kept)


async def test_readiness_probe_setting() -> None:
    http = ServiceSettings(SERVICE_NAME="web", PORT=8123)  # type: ignore[call-arg]
    none = ServiceSettings(SERVICE_NAME="web", PORT=8123, READINESS_PROBE="none")  # type: ignore[call-arg]
    check = ConsulRegistration(None, http).definition()["check"]  # type: ignore[arg-type]
    assert check["http"] == "http://127.0.0.1:8123/readyz"
    assert check["FailuresBeforeCritical"] == 3  # one late answer must not take it out
    check = ConsulRegistration(None, none).definition()["check"]  # type: ignore[arg-type]
    assert check["tcp"] == "127.0.0.1:8123" and "http" not in check
    assert check["FailuresBeforeCritical"] == 3
    assert check["DeregisterCriticalServiceAfter"]


@pytest.mark.parametrize(("probe", "taken_out_first"), [("http", True), ("none", False)])
async def test_taken_out_before_draining_only_with_a_probe(
    probe: str, taken_out_first: bool
) -> None:
    """With a probe, deregistering is a drain hook (it runs as draining begins, so nothing
    new arrives); without one it is left to the way out, after the listener has closed."""
    settings = ServiceSettings(
        SERVICE_NAME="web",
        CONSUL_HTTP_ADDR="http://127.0.0.1:1",  # unreachable: registration keeps retrying
        READINESS_PROBE=probe,  # type: ignore[arg-type]
    )
    app = create_app(settings, use_redis=False, use_kafka=False, faults=False)
    async with TestServer(app, host="127.0.0.1"):
        registration = app[REGISTRATION]
        assert (registration.stop in app[LIFECYCLE].drain_hooks) is taken_out_first
