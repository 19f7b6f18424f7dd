"""The gateway as a real process in front of real upstream processes, discovered in Consul."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import consul
import pytest
from gw_support import Fleet, Gateway, start_gateway

from infra.embedded import Endpoints
from infra.process import async_wait_until


def consul_sync(addr: str) -> consul.Consul:
    host, port = addr.removeprefix("http://").split(":")
    return consul.Consul(host=host, port=int(port))


async def instances(session: aiohttp.ClientSession, gw: Gateway, logical: str) -> list[dict]:
    async with session.get(gw.url + "/admin/instances", headers=gw.admin_headers) as r:
        assert r.status == 200
        return (await r.json())[gw.services[logical]]["instances"]


async def served_by(
    session: aiohttp.ClientSession, gw: Gateway, path: str = "/api/orders/x", **headers: str
) -> tuple[int, str | None, str | None]:
    async with session.get(gw.url + path, headers={**gw.key_headers, **headers}) as r:
        body = await r.json()
        return r.status, body.get("instance"), r.headers.get("X-Mesh-Upstream-Version")


async def wait_instances(session: aiohttp.ClientSession, gw: Gateway, logical: str, n: int) -> None:
    async def count() -> bool:
        return len(await instances(session, gw, logical)) == n

    await async_wait_until(count, timeout=10, what=f"{n} instances of {logical} in the gateway")


async def set_weights(gw: Gateway, logical: str, weights: dict[str, int] | None) -> None:
    url = f"{gw.url}/admin/traffic/{gw.services[logical]}"
    async with aiohttp.ClientSession(headers=gw.admin_headers) as session:
        if weights is None:
            async with session.delete(url) as r:
                assert r.status == 200
        else:
            async with session.put(url, json=weights) as r:
                assert r.status == 200, await r.text()

        async def applied() -> bool:
            async with session.get(url) as r:
                return (await r.json())["weights"] == weights

        await async_wait_until(applied, timeout=5, what=f"weights {weights} applied")


async def test_spreads_and_follows_registrations_within_a_second(
    gateway: Gateway, fleet: Fleet, infra: Endpoints
) -> None:
    name = gateway.services["orders"]
    a, b = fleet.start(name), fleet.start(name)
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 2)
        seen = Counter([(await served_by(session, gateway))[1] for _ in range(40)])
        assert set(seen) == {a.instance_id, b.instance_id}
        assert min(seen.values()) >= 10  # least-outstanding ties rotate

        # A new instance: from passing in Consul to taking traffic.
        c = fleet.start(name, wait=False)
        registry = consul_sync(infra.consul_addr)

        def passing() -> bool:
            _, nodes = registry.health.service(name, passing=True)
            return c.instance_id in {n["Service"]["ID"] for n in nodes}

        await async_wait_until(passing, timeout=20, what="new instance passing", interval=0.01)
        t0 = time.monotonic()

        async def c_serves() -> bool:
            return (await served_by(session, gateway))[1] == c.instance_id

        await async_wait_until(c_serves, timeout=5, what="new instance serving", interval=0.005)
        took_new = time.monotonic() - t0

        # A deregistered instance: from deregistration to getting no more traffic.
        registry.agent.service.deregister(a.instance_id)
        t0 = time.monotonic()

        async def a_gone() -> bool:
            return a.instance_id not in {
                i["id"] for i in await instances(session, gateway, "orders")
            }

        await async_wait_until(
            a_gone, timeout=5, what="deregistered instance dropped", interval=0.005
        )
        took_gone = time.monotonic() - t0
        after = Counter([(await served_by(session, gateway))[1] for _ in range(30)])
        assert a.instance_id not in after and set(after) == {b.instance_id, c.instance_id}
    print(f"new instance took traffic after {took_new:.3f}s, removal took {took_gone:.3f}s")
    assert took_new < 1.0 and took_gone < 1.0


async def test_killed_instance_costs_no_failed_get(gateway: Gateway, fleet: Fleet) -> None:
    name = gateway.services["orders"]
    victims = [fleet.start(name) for _ in range(3)]
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 3)

        async def loop() -> None:
            while not stop.is_set():
                status, _, _ = await served_by(session, gateway, "/api/orders/x?delay_ms=5")
                statuses[status] += 1

        workers = [asyncio.create_task(loop()) for _ in range(8)]
        await async_wait_until(lambda: statuses.total() > 200, timeout=20, what="warm traffic")
        os.kill(victims[0].process.pid, signal.SIGKILL)
        killed_at = statuses.total()
        await async_wait_until(
            lambda: statuses.total() > killed_at + 600, timeout=30, what="traffic after the kill"
        )
        stop.set()
        await asyncio.gather(*workers)
        async with session.get(gateway.url + "/metrics") as r:
            text = await r.text()
    retries = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_retries_total{") and name in line
    )
    failed = statuses.total() - statuses[200]
    print(f"{statuses.total()} GETs, {failed} failed, {retries:.0f} retries spent on the kill")
    # Every GET that hit the dead instance was retried on another one within the budget.
    assert failed == 0, statuses
    assert retries >= 1


async def test_a_post_dying_with_its_instance_is_retried_only_with_an_idempotency_key(
    gateway: Gateway, fleet: Fleet
) -> None:
    """Killed mid-request, the upstream may or may not have acted on a POST: the gateway tries
    it again elsewhere only when an Idempotency-Key lets the service answer it once."""
    name = gateway.services["orders"]
    first = fleet.start(name)
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 1)

        async def post(**headers: str) -> tuple[int, dict]:
            # Held at the first instance until it is killed, whatever the second takes to start.
            async with session.post(
                gateway.url + f"/api/orders?delay_ms=25000&delay_port={first.port}",
                json={"customer_id": "c-1"},
                headers={**gateway.key_headers, **headers},
            ) as r:
                return r.status, await r.json()

        keyed = asyncio.create_task(post(**{"Idempotency-Key": "k-1"}))
        bare = asyncio.create_task(post())

        async def both_in_flight() -> bool:
            return [i["outstanding"] for i in await instances(session, gateway, "orders")] == [2]

        await async_wait_until(both_in_flight, timeout=5, what="both POSTs at the first instance")
        second = fleet.start(name)
        await wait_instances(session, gateway, "orders", 2)
        os.kill(first.process.pid, signal.SIGKILL)
        (keyed_status, keyed_body), (bare_status, bare_body) = await asyncio.gather(keyed, bare)
    assert keyed_status == 200, keyed_body
    assert keyed_body["instance"] == second.instance_id
    assert keyed_body["headers"]["idempotency-key"] == "k-1"
    assert bare_status == 502, bare_body
    assert bare_body["error"]["code"] == "bad_gateway"


async def test_weights_split_pin_and_apply_within_a_second(
    gateway: Gateway, fleet: Fleet, infra: Endpoints
) -> None:
    name = gateway.services["orders"]
    fleet.start(name, "v1")
    fleet.start(name, "v1")
    fleet.start(name, "v2")
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 3)
        await set_weights(gateway, "orders", {"v1": 90, "v2": 10})

        sem = asyncio.Semaphore(10)

        async def one() -> str | None:
            async with sem:
                status, _, version = await served_by(session, gateway)
                assert status == 200
                return version

        versions = Counter(await asyncio.gather(*(one() for _ in range(1000))))
        print(f"weights 90/10 -> {dict(versions)}")
        assert versions["v1"] + versions["v2"] == 1000
        assert 70 <= versions["v2"] <= 130  # 10% +- 3%

        pinned = Counter(
            [(await served_by(session, gateway, **{"X-Mesh-Version": "v2"}))[2] for _ in range(20)]
        )
        assert pinned == {"v2": 20}
        status, _, _ = await served_by(session, gateway, **{"X-Mesh-Version": "v7"})
        assert status == 503

        # Straight into Consul KV, as meshctl does, timed until the gateway acts on it.
        registry = consul_sync(infra.consul_addr)
        registry.kv.put(f"mesh/traffic/{name}", json.dumps({"v1": 0, "v2": 100}))
        t0 = time.monotonic()

        async def all_v2() -> bool:
            return (await served_by(session, gateway))[2] == "v2"

        await async_wait_until(all_v2, timeout=5, what="weights 0/100 applied", interval=0.005)
        took = time.monotonic() - t0
        assert Counter([(await served_by(session, gateway))[2] for _ in range(20)]) == {"v2": 20}
    await set_weights(gateway, "orders", None)
    print(f"weight change applied after {took:.3f}s")
    assert took < 1.0


async def test_outlier_is_ejected_and_recovers(gateway: Gateway, fleet: Fleet) -> None:
    name = gateway.services["orders"]
    good, bad = fleet.start(name), fleet.start(name)
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 2)
        bad.fail(500)
        statuses = Counter()
        for _ in range(30):
            statuses[(await served_by(session, gateway))[0]] += 1

        async with session.get(
            gateway.url + "/admin/ejections", headers=gateway.admin_headers
        ) as r:
            ejected = await r.json()
        assert [e["id"] for e in ejected] == [bad.instance_id]
        assert statuses[500] == 5  # five consecutive failures eject it (GATEWAY_EJECT_AFTER)
        assert {(await served_by(session, gateway))[1] for _ in range(10)} == {good.instance_id}

        bad.fail(0)

        async def back() -> bool:
            return (await served_by(session, gateway))[1] == bad.instance_id

        await async_wait_until(back, timeout=5, what="recovered instance serving again")


async def test_client_errors_have_their_status(gateway: Gateway, fleet: Fleet) -> None:
    fleet.start(gateway.services["orders"])
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 1)
        url = gateway.url + "/api/orders/1"

        async def status_of(method: str, url: str, **kw: object) -> tuple[int, dict]:
            async with session.request(method, url, **kw) as r:  # type: ignore[arg-type]
                body = await r.json()
                assert set(body) == {"error"} or r.status < 400, body
                return r.status, dict(r.headers)

        assert (await status_of("GET", url))[0] == 401
        assert (await status_of("GET", url, headers={"X-API-Key": "x" * 20}))[0] == 403
        assert (await status_of("GET", gateway.url + "/api/nope", headers=gateway.key_headers))[
            0
        ] == 404
        assert (await status_of("GET", gateway.url + "/nope", headers=gateway.key_headers))[
            0
        ] == 404
        assert (await status_of("DELETE", url, headers=gateway.key_headers))[0] == 405
        big = b"{" + b" " * (300 * 1024) + b"}"
        status, _ = await status_of(
            "POST",
            gateway.url + "/api/orders",
            data=big,
            headers={**gateway.key_headers, "Content-Type": "application/json"},
        )
        assert status == 413
        # inventory has no instance at all
        status, headers = await status_of(
            "GET", gateway.url + "/api/stock", headers=gateway.key_headers
        )
        assert status == 503 and headers["Retry-After"] == "1"
        assert (
            await status_of("GET", url, headers={**gateway.key_headers, "X-Mesh-Version": "x"})
        )[0] == 400
        assert (await status_of("GET", gateway.url + "/admin/routes"))[0] == 401
        assert (
            await status_of(
                "GET",
                gateway.url + "/admin/routes",
                headers={"Authorization": "Bearer " + gateway.api_key},
            )
        )[0] == 403


async def test_rate_limit_answers_429_with_retry_after(
    infra: Endpoints, fleet: Fleet, tmp_path: Path
) -> None:
    gw = start_gateway(
        infra.env(), tmp_path / "limited", GATEWAY_RATE_LIMIT_RPS="1", GATEWAY_RATE_LIMIT_BURST="5"
    )
    try:
        fleet.start(gw.services["orders"])
        async with aiohttp.ClientSession() as session:
            await wait_instances(session, gw, "orders", 1)
            statuses, retry_after = [], None
            for _ in range(8):
                async with session.get(gw.url + "/api/orders/1", headers=gw.key_headers) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        retry_after = r.headers["Retry-After"]
                        assert (await r.json())["error"]["code"] == "rate_limited"
        # The bucket had (about) 5 tokens; at most one more trickled in meanwhile.
        assert statuses.count(200) in (5, 6) and statuses.count(429) >= 2, statuses
        assert retry_after is not None and int(retry_after) >= 1
    finally:
        gw.process.stop()


async def test_headers_on_the_way_through(gateway: Gateway, fleet: Fleet) -> None:
    fleet.start(gateway.services["orders"])
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "orders", 1)
        async with session.post(
            gateway.url + "/api/orders?x=1",
            json={"customer_id": "c-1"},
            headers={
                **gateway.key_headers,
                "Connection": "keep-alive, X-Drop-Me",
                "X-Drop-Me": "hop-by-hop",
                "X-Keep-Me": "end-to-end",
                "X-Forwarded-For": "203.0.113.9",
            },
        ) as r:
            body = await r.json()
            assert r.status == 200
            assert r.headers["Location"] == "/api/orders"  # upstream said /orders
            assert "X-Upstream-Secret" not in r.headers
            assert r.headers["X-Mesh-Upstream-Version"] == "v1"
            assert r.headers["X-Request-Id"]
    seen = body["headers"]
    assert (
        body["path"] == "/orders"
        and body["query"] == "x=1"
        and body["body"] == {"customer_id": "c-1"}
    )
    assert "x-drop-me" not in seen and "x-api-key" not in seen
    assert seen["x-keep-me"] == "end-to-end"
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-request-id"] == r.headers["X-Request-Id"]
    assert "traceparent" in seen  # W3C context goes upstream


async def test_server_sent_events_stream_through(gateway: Gateway, fleet: Fleet) -> None:
    fleet.start(gateway.services["notifications"])
    async with aiohttp.ClientSession() as session:
        await wait_instances(session, gateway, "notifications", 1)
        async with session.get(
            gateway.url + "/api/notifications/stream?events=4", headers=gateway.key_headers
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            text = (await r.read()).decode()
    assert [line for line in text.splitlines() if line.startswith("data:")] == [
        f"data: {n}" for n in range(4)
    ]


async def test_admin_rejects_bad_weights(gateway: Gateway) -> None:
    url = f"{gateway.url}/admin/traffic/{gateway.services['orders']}"
    async with aiohttp.ClientSession(headers=gateway.admin_headers) as session:
        for bad in ({"v1": 0}, {"blue": 100}, {"v1": 101}, {"v1": "50"}):
            async with session.put(url, json=bad) as r:
                assert r.status == 422, (bad, await r.text())
        async with session.put(url, data=b"{", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with session.get(f"{gateway.url}/admin/traffic/unknown") as r:
            assert r.status == 404


@pytest.mark.parametrize("missing", ["GATEWAY_API_KEYS", "GATEWAY_ADMIN_TOKEN"])
def test_refuses_to_start_without_secrets(infra: Endpoints, tmp_path: Path, missing: str) -> None:
    import subprocess
    import sys

    env = {
        **os.environ,
        **infra.env(),
        "GATEWAY_API_KEYS": "k" * 20,
        "GATEWAY_ADMIN_TOKEN": "t" * 20,
    }
    env.pop(missing)
    done = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"config error: {missing}: required but not set"


def test_a_weak_key_is_refused_without_echoing_it(infra: Endpoints) -> None:
    import subprocess
    import sys

    env = {
        **os.environ,
        **infra.env(),
        "GATEWAY_API_KEYS": "hunter2",
        "GATEWAY_ADMIN_TOKEN": "t" * 20,
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "config error: GATEWAY_API_KEYS: needs at least one key, each of at least 16 characters"
    )
    assert "hunter2" not in done.stderr
