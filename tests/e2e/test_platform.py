"""The whole platform as a user runs it: ``meshctl up``, an order through the gateway's
public API, its trace across every service, ``meshctl down`` leaving nothing behind.

Everything is real and on loopback: its own tansu, valkey and registry (started by
``meshctl up`` in a state folder of this test), the gateway and the four services as
processes under the supervisor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.process import free_port, pid_alive, wait_until

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
SERVICES = ("gateway", "orders", "inventory", "payments", "notifications")


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def call(method: str, url: str, key: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def all_pids(home: Path) -> list[int]:
    pids = []
    for name in ("infra.json", "runtime.json", "supervisor.json", "console.json"):
        path = home / name
        if path.exists():
            text = path.read_text()
            pids += [int(p) for p in _find_pids(json.loads(text))]
    return pids


def _find_pids(data: Any) -> Iterator[int]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "pid" and isinstance(value, int):
                yield value
            else:
                yield from _find_pids(value)
    elif isinstance(data, list):
        for item in data:
            yield from _find_pids(item)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")
    }
    env.update(MESH_HOME=str(tmp_path), GATEWAY_PORT=str(free_port()), RUNTIME="local")
    yield env, tmp_path
    meshctl(env, "down")


def test_an_order_through_the_whole_platform(platform: tuple[dict[str, str], Path]) -> None:
    env, home = platform
    started = time.monotonic()
    up = meshctl(env, "up")
    took = time.monotonic() - started
    assert up.returncode == 0, up.stderr[-2000:]
    print(f"meshctl up: all healthy after {took:.1f}s")

    status = json.loads(meshctl(env, "status", "--json").stdout)
    assert status["runtime"] == "local"
    by_name = {s["name"]: s for s in status["services"]}
    shop = SERVICES[1:]  # the gateway has a section of its own
    assert set(shop) <= set(by_name)
    assert all(by_name[n]["healthy"] >= 1 for n in shop), by_name
    url, key = status["gateway"]["url"], status["gateway"]["api_key"]
    assert all(status["infra"][p]["healthy"] for p in ("kafka", "redis", "consul"))

    code, headers, stock_before = call("GET", f"{url}/api/stock/SKU-002", key)
    assert code == 200, stock_before
    code, headers, order = call(
        "POST",
        f"{url}/api/orders",
        key,
        {"customer_id": "e2e-customer", "items": [{"sku": "SKU-002", "quantity": 2}]},
    )
    assert code == 202, order
    assert order["status"] == "PENDING"
    assert headers["Location"] == f"/api/orders/{order['id']}"
    assert headers["X-Mesh-Upstream-Version"] == "v1"

    def terminal() -> dict[str, Any] | None:
        _, _, current = call("GET", f"{url}/api/orders/{order['id']}", key)
        return current if current["status"] != "PENDING" else None

    final = wait_until(terminal, timeout=30, what="order terminal", interval=0.1)
    assert final["status"] == "CONFIRMED", final
    assert [step["status"] for step in final["timeline"]] == ["PENDING", "CONFIRMED"]

    # Sold, not available: the local runtime restocks (INVENTORY_RESTOCK), so available goes
    # back up; inventory commits the sale when it reads payment.succeeded, maybe just after.
    def sold() -> bool:
        _, _, stock_after = call("GET", f"{url}/api/stock/SKU-002", key)
        return bool(stock_after["sold"] == stock_before["sold"] + 2)

    wait_until(sold, timeout=15, what="the order's units sold", interval=0.1)
    code, _, payment = call("GET", f"{url}/api/payments/{order['id']}", key)
    assert code == 200 and payment["status"] == "SUCCEEDED"

    def notified() -> Any:
        _, _, found = call("GET", f"{url}/api/notifications?order_id={order['id']}", key)
        return found["notifications"]

    assert len(wait_until(notified, timeout=15, what="notification")) == 1

    # One order is ONE trace through every service (span files are flushed every 0.5 s);
    # the GETs that polled it are traces of their own.
    def one_trace_for_all() -> str | None:
        out = meshctl(env, "trace", order["id"]).stdout
        headers = [line for line in out.splitlines() if line.startswith("trace ")]
        return out if any(all(n in h for n in SERVICES) for h in headers) else None

    tree = wait_until(
        one_trace_for_all, timeout=20, what="one trace spans every service", interval=0.5
    )
    print(tree)

    pids = all_pids(home)
    assert len(pids) >= 3 + len(SERVICES)
    assert (home / "console.json").exists(), "make up starts the console too"
    down = meshctl(env, "down")
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=20, what="nothing left")
