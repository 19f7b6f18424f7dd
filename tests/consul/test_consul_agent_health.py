"""Contract tests of the agent, health and catalog endpoints, through py-consul (sync and aio).

They run unchanged against a real Consul (``CONSUL_HTTP_ADDR=... pytest tests/consul``);
the few that rely on what only the development registry does are skipped there, and say
why. Every test uses its own service names, so a shared agent is fine.

Check intervals are short ("200ms"); a real agent raises them to its 1 s minimum, which
the deadlines allow for.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio
import pytest
from aiohttp import web

from infra.process import free_port, wait_until

T = TypeVar("T")
DEADLINE = 10.0

# py-consul's aio client builds its connector with an argument aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:ssl_context is deprecated:DeprecationWarning")


# -- helpers -------------------------------------------------------------------------------


def _parts(addr: str) -> dict[str, Any]:
    url = urlsplit(addr)
    return {"host": url.hostname, "port": url.port, "scheme": url.scheme}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, what: str, timeout: float = DEADLINE
) -> T:
    """Poll ``probe`` until it answers something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def sync_client(consul_addr: str) -> consul.Consul:
    return consul.Consul(**_parts(consul_addr))


@pytest.fixture
async def aio_client(consul_addr: str) -> AsyncIterator[consul.aio.Consul]:
    client = consul.aio.Consul(**_parts(consul_addr))
    yield client
    await client.http.close()


@pytest.fixture
async def http(consul_addr: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=consul_addr) as session:
        yield session


@pytest.fixture(scope="module")
def is_devregistry(consul_addr: str) -> bool:
    """True when the agent is this project's development registry, not a real Consul."""
    agent = consul.Consul(**_parts(consul_addr)).agent.self()
    return bool(agent["Config"].get("VersionMetadata") == "devregistry")


class Target:
    """A tiny HTTP server on loopback whose answer status the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.failing = 0  # the next this many probes answer 500, then self.status again
        self.probes = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.probes += 1
        status = self.status
        if self.failing > 0:
            self.failing -= 1
            status = 500
        return web.Response(status=status, text=f"answering {status}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/readyz"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    server = Target()
    await server.start()
    yield server
    await server.stop()


async def check_of(client: consul.aio.Consul, service: str, check_id: str) -> dict[str, Any] | None:
    _, checks = await client.health.checks(service)
    return next((c for c in checks or [] if c["CheckID"] == check_id), None)


async def wait_status(
    client: consul.aio.Consul, service: str, check_id: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        check = await check_of(client, service, check_id)
        return check if check is not None and check["Status"] == status else None

    return await eventually(probe, what=f"{check_id} {status}")


@pytest.fixture
def cleanup_services(sync_client: consul.Consul) -> Iterator[list[str]]:
    """Service IDs to deregister after the test, whatever happened."""
    ids: list[str] = []
    yield ids
    for service_id in ids:
        sync_client.agent.service.deregister(service_id)


# -- checks --------------------------------------------------------------------------------


async def test_http_check_follows_target_status(
    aio_client: consul.aio.Consul, target: Target, cleanup_services: list[str]
) -> None:
    name = unique("web")
    service_id = f"{name}-1"
    cleanup_services.append(service_id)
    registered = await aio_client.agent.service.register(
        name,
        service_id=service_id,
        address="127.0.0.1",
        port=target.port,
        tags=["v1", "blue"],
        meta={"version": "v1"},
        check=consul.Check.http(target.url, "200ms", timeout="1s"),
    )
    assert registered is True
    check_id = f"service:{service_id}"

    passing = await wait_status(aio_client, name, check_id, "passing")
    assert passing["Output"].startswith(f"HTTP GET {target.url}: 200 OK Output: answering 200")
    assert passing["ServiceID"] == service_id and passing["ServiceName"] == name

    _, nodes = await aio_client.health.service(name, passing=True)
    assert len(nodes) == 1
    entry = nodes[0]
    assert entry["Service"]["ID"] == service_id
    assert entry["Service"]["Meta"] == {"version": "v1"}
    assert sorted(entry["Service"]["Tags"]) == ["blue", "v1"]
    assert entry["Service"]["Port"] == target.port
    assert {c["CheckID"] for c in entry["Checks"]} == {"serfHealth", check_id}
    assert entry["Node"]["Datacenter"] == "dc1"

    target.status = 500
    critical = await wait_status(aio_client, name, check_id, "critical")
    assert "500 Internal Server Error" in critical["Output"]
    _, nodes = await aio_client.health.service(name, passing=True)
    assert nodes == []

    target.status = 429
    await wait_status(aio_client, name, check_id, "warning")
    target.status = 200
    await wait_status(aio_client, name, check_id, "passing")


async def test_failures_before_critical_rides_out_slow_answers(
    aio_client: consul.aio.Consul, target: Target, cleanup_services: list[str]
) -> None:
    """The check the services register (FailuresBeforeCritical 3): two failed probes in a row
    leave the instance passing and routed; the third takes it out."""
    name = unique("busy")
    service_id = f"{name}-1"
    cleanup_services.append(service_id)
    check = {**consul.Check.http(target.url, "200ms", timeout="1s"), "FailuresBeforeCritical": 3}
    await aio_client.agent.service.register(
        name, service_id=service_id, address="127.0.0.1", port=target.port, check=check
    )
    check_id = f"service:{service_id}"
    await wait_status(aio_client, name, check_id, "passing")

    target.failing = 2
    seen: set[str] = set()

    async def rode_out() -> bool:
        found = await check_of(aio_client, name, check_id)
        seen.add(found["Status"] if found else "gone")
        return target.failing == 0 and target.probes > 0

    await eventually(rode_out, what="two failed probes answered")
    base = target.probes
    await eventually(lambda: _after(target, base + 2), what="two more probes")
    found = await check_of(aio_client, name, check_id)
    assert found is not None and found["Status"] == "passing" and seen == {"passing"}, seen

    target.status = 500
    failing_from = target.probes
    await wait_status(aio_client, name, check_id, "critical")
    assert target.probes - failing_from >= 3
    _, nodes = await aio_client.health.service(name, passing=True)
    assert nodes == []


async def _after(target: Target, probes: int) -> bool:
    return target.probes >= probes


async def test_http_check_against_closed_port_is_critical(
    aio_client: consul.aio.Consul, cleanup_services: list[str]
) -> None:
    name = unique("down")
    cleanup_services.append(name)
    url = f"http://127.0.0.1:{free_port()}/readyz"
    # With Status "passing" the check starts passing, so reaching critical proves it ran.
    check = consul.Check.http(url, "200ms", timeout="500ms")
    check["Status"] = "passing"
    await aio_client.agent.service.register(name, check=check)
    critical = await wait_status(aio_client, name, f"service:{name}", "critical")
    assert "connection refused" in critical["Output"]


async def test_registry_reaps_service_critical_past_deregister_after(
    aio_client: consul.aio.Consul, target: Target, is_devregistry: bool, cleanup_services: list[str]
) -> None:
    if not is_devregistry:
        pytest.skip("real Consul reaps after at least 1 minute (30 s sweeps); registry-only")
    failing, healthy = unique("reaped"), unique("kept")
    cleanup_services.extend([failing, healthy])
    dead_url = f"http://127.0.0.1:{free_port()}/readyz"
    await aio_client.agent.service.register(
        failing, check=consul.Check.http(dead_url, "200ms", timeout="200ms", deregister="1s")
    )
    await aio_client.agent.service.register(
        healthy, check=consul.Check.http(target.url, "200ms", timeout="1s", deregister="1s")
    )

    async def reaped() -> bool:
        services = await aio_client.agent.services()
        return failing not in services

    started = time.monotonic()
    await eventually(reaped, what=f"{failing} deregistered")
    assert time.monotonic() - started >= 0.9  # not before DeregisterCriticalServiceAfter
    assert healthy in await aio_client.agent.services()
    _, nodes = await aio_client.health.service(failing)
    assert nodes == []


async def test_tcp_check(aio_client: consul.aio.Consul, cleanup_services: list[str]) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    name = unique("tcp")
    cleanup_services.append(name)
    await aio_client.agent.service.register(
        name, port=port, check=consul.Check.tcp("127.0.0.1", port, "200ms", timeout="500ms")
    )
    check_id = f"service:{name}"
    passing = await wait_status(aio_client, name, check_id, "passing")
    assert passing["Output"] == f"TCP connect 127.0.0.1:{port}: Success"

    server.close()
    await server.wait_closed()
    critical = await wait_status(aio_client, name, check_id, "critical")
    assert "connection refused" in critical["Output"]


def test_ttl_check_pass_warn_fail_and_expiry(
    sync_client: consul.Consul, cleanup_services: list[str]
) -> None:
    name = unique("ttl")
    cleanup_services.append(name)
    assert sync_client.agent.service.register(name, check=consul.Check.ttl("1s")) is True
    check_id = f"service:{name}"

    def status() -> tuple[str, str]:
        check = sync_client.agent.checks()[check_id]
        return check["Status"], check["Output"]

    assert status()[0] == "critical"  # Consul's initial status
    assert sync_client.agent.check.ttl_warn(check_id, notes="slow") is True
    assert status() == ("warning", "slow")
    assert sync_client.agent.check.ttl_fail(check_id, notes="broken") is True
    assert status() == ("critical", "broken")
    assert sync_client.agent.check.ttl_pass(check_id, notes="fine") is True
    assert status() == ("passing", "fine")

    # No update within the TTL: critical again, with Consul's "TTL expired" output.
    def expired() -> str | None:
        current, output = status()
        return output if current == "critical" else None

    assert wait_until(expired, timeout=DEADLINE, what="TTL expiry").startswith("TTL expired")


async def test_check_update_endpoint(
    http: aiohttp.ClientSession, sync_client: consul.Consul, cleanup_services: list[str]
) -> None:
    name = unique("upd")
    cleanup_services.append(name)
    sync_client.agent.service.register(name, check=consul.Check.ttl("30s"))
    body = json.dumps({"Status": "warning", "Output": "queue is long"})
    async with http.put(f"/v1/agent/check/update/service:{name}", data=body) as response:
        assert response.status == 200
    check = sync_client.agent.checks()[f"service:{name}"]
    assert (check["Status"], check["Output"]) == ("warning", "queue is long")


def test_agent_check_register_and_deregister(
    sync_client: consul.Consul, cleanup_services: list[str]
) -> None:
    name = unique("extra")
    cleanup_services.append(name)
    sync_client.agent.service.register(name)
    passing_ttl = {**consul.Check.ttl("30s"), "Status": "passing"}
    node_check, service_check = unique("node-check"), unique("svc-check")
    assert sync_client.agent.check.register(node_check, check=passing_ttl) is True
    assert sync_client.agent.check.register(
        "second opinion", check=passing_ttl, check_id=service_check, service_id=name
    )
    try:
        checks = sync_client.agent.checks()
        assert checks[node_check]["ServiceID"] == ""
        assert checks[node_check]["Status"] == "passing"
        assert checks[service_check]["ServiceID"] == name
        assert checks[service_check]["Name"] == "second opinion"
        _, health = sync_client.health.checks(name)
        assert [c["CheckID"] for c in health] == [service_check]
    finally:
        assert sync_client.agent.check.deregister(node_check) is True
    assert node_check not in sync_client.agent.checks()
    assert sync_client.agent.check.deregister(node_check) is False  # 404 now


def test_several_checks_get_numbered_ids(
    sync_client: consul.Consul, cleanup_services: list[str]
) -> None:
    name = unique("multi")
    cleanup_services.append(name)
    sync_client.agent.service.register(
        name, check=consul.Check.ttl("30s"), extra_checks=[consul.Check.ttl("30s")]
    )
    checks = {cid for cid, c in sync_client.agent.checks().items() if c["ServiceID"] == name}
    assert checks == {f"service:{name}:1", f"service:{name}:2"}


def test_reregistering_replaces_the_service(
    sync_client: consul.Consul, cleanup_services: list[str]
) -> None:
    name = unique("rereg")
    cleanup_services.append(name)
    sync_client.agent.service.register(name, port=1000, tags=["old"], meta={"version": "v1"})
    sync_client.agent.service.register(name, port=2000, tags=["new"], meta={"version": "v2"})
    service = sync_client.agent.services()[name]
    assert (service["Port"], service["Tags"], service["Meta"]) == (2000, ["new"], {"version": "v2"})
    assert sync_client.agent.service_definition(name)["Port"] == 2000


# -- health filters and catalog ------------------------------------------------------------


@pytest.fixture
def three_instances(sync_client: consul.Consul, cleanup_services: list[str]) -> str:
    """One service name, three instances: a (v1, blue) passing, b (v1) warning, c (v2)."""
    name = unique("shop")
    for suffix, tags in (("a", ["v1", "blue"]), ("b", ["v1"]), ("c", ["v2"])):
        service_id = f"{name}-{suffix}"
        cleanup_services.append(service_id)
        sync_client.agent.service.register(
            name, service_id=service_id, tags=tags, check=consul.Check.ttl("60s")
        )
    sync_client.agent.check.ttl_pass(f"service:{name}-a")
    sync_client.agent.check.ttl_warn(f"service:{name}-b")
    sync_client.agent.check.ttl_pass(f"service:{name}-c")
    return name


def _ids(nodes: list[dict[str, Any]]) -> set[str]:
    return {entry["Service"]["ID"].rsplit("-", 1)[1] for entry in nodes}


def test_health_passing_and_tag_filters(sync_client: consul.Consul, three_instances: str) -> None:
    name = three_instances
    index, nodes = sync_client.health.service(name)
    assert int(index) > 0
    assert _ids(nodes) == {"a", "b", "c"}
    # warning is not passing for ?passing, as in Consul.
    assert _ids(sync_client.health.service(name, passing=True)[1]) == {"a", "c"}
    assert _ids(sync_client.health.service(name, tag="v1")[1]) == {"a", "b"}
    assert _ids(sync_client.health.service(name, tag=["v1", "blue"])[1]) == {"a"}
    assert _ids(sync_client.health.service(name, tag="v1", passing=True)[1]) == {"a"}
    assert sync_client.health.service(unique("nobody"))[1] == []
    assert sync_client.health.service(name, node_meta={"no-such-meta": "x"})[1] == []


async def test_health_passing_query_spellings(
    http: aiohttp.ClientSession, three_instances: str
) -> None:
    for query in ("passing", "passing=1", "passing=true"):
        async with http.get(f"/v1/health/service/{three_instances}?{query}") as response:
            assert response.status == 200
            assert _ids(await response.json()) == {"a", "c"}
    async with http.get(f"/v1/health/service/{three_instances}?passing=false") as response:
        assert _ids(await response.json()) == {"a", "b", "c"}


def test_catalog_services_and_service(sync_client: consul.Consul, three_instances: str) -> None:
    name = three_instances
    index, services = sync_client.catalog.services()
    assert int(index) > 0
    assert "consul" in services
    assert set(services[name]) == {"v1", "blue", "v2"}

    _, entries = sync_client.catalog.service(name)
    assert len(entries) == 3
    entry = next(e for e in entries if e["ServiceID"] == f"{name}-a")
    assert entry["ServiceName"] == name
    assert sorted(entry["ServiceTags"]) == ["blue", "v1"]
    assert entry["Datacenter"] == "dc1"
    for field in ("Node", "Address", "ServiceAddress", "ServicePort", "ServiceMeta"):
        assert field in entry
    assert entry["ModifyIndex"] >= entry["CreateIndex"] > 0

    _, tagged = sync_client.catalog.service(name, tag="v2")
    assert [e["ServiceID"] for e in tagged] == [f"{name}-c"]


def test_health_checks_of_service(sync_client: consul.Consul, three_instances: str) -> None:
    _, checks = sync_client.health.checks(three_instances)
    statuses = {c["CheckID"]: c["Status"] for c in checks}
    assert statuses == {
        f"service:{three_instances}-a": "passing",
        f"service:{three_instances}-b": "warning",
        f"service:{three_instances}-c": "passing",
    }


def test_agent_self_and_status(sync_client: consul.Consul) -> None:
    assert sync_client.status.leader()
    agent = sync_client.agent.self()
    assert agent["Config"]["Datacenter"] == "dc1"
    assert agent["Config"]["NodeName"]
    assert agent["Member"]["Name"] == agent["Config"]["NodeName"]


# -- payload casing ------------------------------------------------------------------------

PAYLOADS = {
    "Consul casing": {
        "ID": "{id}",
        "Name": "{name}",
        "Tags": ["v1"],
        "Address": "127.0.0.1",
        "Port": 8080,
        "Meta": {"version": "v1"},
        "EnableTagOverride": False,
        "Check": {
            "CheckID": "{id}-ttl",
            "Name": "ttl check",
            "TTL": "30s",
            "Status": "passing",
            "Notes": "from the test",
            "DeregisterCriticalServiceAfter": "1m",
        },
    },
    "lowercase": {
        "id": "{id}",
        "name": "{name}",
        "tags": ["v1"],
        "address": "127.0.0.1",
        "port": 8080,
        "meta": {"version": "v1"},
        "enabletagoverride": False,
        "checks": [
            {
                "checkid": "{id}-ttl",
                "name": "ttl check",
                "ttl": "30s",
                "status": "passing",
                "notes": "from the test",
                "deregistercriticalserviceafter": "1m",
            }
        ],
    },
    "snake_case": {
        "id": "{id}",
        "name": "{name}",
        "tags": ["v1"],
        "address": "127.0.0.1",
        "port": 8080,
        "meta": {"version": "v1"},
        "enable_tag_override": False,
        # No check_id: Consul documents snake_case aliases for these fields only.
        "check": {
            "name": "ttl check",
            "ttl": "30s",
            "status": "passing",
            "notes": "from the test",
            "deregister_critical_service_after": "1m",
        },
    },
}


@pytest.mark.parametrize("casing", sorted(PAYLOADS))
async def test_register_payload_casings(
    http: aiohttp.ClientSession, casing: str, cleanup_services: list[str]
) -> None:
    name = unique("case")
    service_id = f"{name}-1"
    cleanup_services.append(service_id)
    body = json.dumps(PAYLOADS[casing]).replace("{id}", service_id).replace("{name}", name)
    async with http.put("/v1/agent/service/register", data=body) as response:
        assert response.status == 200, await response.text()

    async with http.get(f"/v1/agent/service/{service_id}") as response:
        service = await response.json()
    assert service["ID"] == service_id and service["Service"] == name
    assert (service["Tags"], service["Meta"]) == (["v1"], {"version": "v1"})
    assert (service["Address"], service["Port"]) == ("127.0.0.1", 8080)

    async with http.get("/v1/agent/checks") as response:
        checks = await response.json()
    (check,) = [c for c in checks.values() if c["ServiceID"] == service_id]
    assert (check["Name"], check["Status"], check["Notes"]) == (
        "ttl check",
        "passing",
        "from the test",
    )
    assert check["ServiceID"] == service_id


# -- errors --------------------------------------------------------------------------------


async def test_unknown_ids_answer_404(
    http: aiohttp.ClientSession, sync_client: consul.Consul
) -> None:
    missing = unique("missing")
    async with http.put(f"/v1/agent/service/deregister/{missing}") as response:
        assert response.status == 404
        assert "Unknown service ID" in await response.text()
    async with http.put(f"/v1/agent/check/pass/{missing}") as response:
        assert response.status == 404
        assert "Unknown check ID" in await response.text()
    async with http.get(f"/v1/agent/service/{missing}") as response:
        assert response.status == 404
    async with http.get("/v1/no-such-endpoint") as response:
        assert response.status == 404
    assert sync_client.agent.service.deregister(missing) is False
    assert sync_client.agent.service_definition(missing) is None


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/v1/health/service/web?index=abc", "Invalid index"),
        ("/v1/health/service/web?index=1&wait=forever", "Invalid wait time"),
        ("/v1/health/service/web?passing=maybe", "Invalid value for ?passing"),
        ("/v1/catalog/service/web?index=-1", "Invalid index"),
        ("/v1/kv/some-key?index=x", "Invalid index"),
    ],
)
async def test_bad_query_arguments_answer_400(
    http: aiohttp.ClientSession, path: str, fragment: str
) -> None:
    async with http.get(path) as response:
        assert response.status == 400
        assert fragment in await response.text()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "Request decode failed"),
        ("{not json", "Request decode failed"),
        ('{"ID": "x"}', "Missing service name"),
        ('{"Name": "x", "Port": "eighty"}', "Request decode failed"),
        ('{"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}', "Interval must be > 0"),
        ('{"Name": "x", "Check": {"TTL": "10s", "Status": "sleepy"}}', "Status for checks"),
    ],
)
async def test_bad_register_payloads_answer_400(
    http: aiohttp.ClientSession, body: str, fragment: str
) -> None:
    async with http.put("/v1/agent/service/register", data=body) as response:
        assert response.status == 400
        assert fragment in await response.text()
