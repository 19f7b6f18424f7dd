"""The whole stack on a real Docker engine: docker-compose.yml with the test override, as
``meshctl up`` started it (the session's stack, ``conftest.py``).

Run by ``tests/compose/run.py`` (``make test-compose``), which starts an engine, installs
Compose v2, builds the images and sets ``MESH_COMPOSE_STACK=1``; without it these tests are
skipped, so ``make test`` never needs Docker. The test talks to the stack only through what
it publishes on 127.0.0.1 (the gateway, the registry) and through the Docker CLI.

1. every container turns healthy (kafka-init exits 0) and runs as docker-compose.yml says;
2. orders placed through the gateway end CONFIRMED;
3. orders scaled to 2, one replica stopped with ``docker stop`` in the middle of continuous
   traffic: no request fails, every order still ends CONFIRMED, the replica exits 0 (then
   orders is back to one replica for the tests that follow);
4. ``meshctl down`` leaves no container, network or volume (test_compose_meshctl.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compose_support import (
    ComposeProject,
    Gateway,
    Traffic,
    container_name,
    docker,
    health_of,
    wait_for,
)
from conftest import MeshctlStack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]

APP_SERVICES = ("gateway", "orders", "inventory", "payments", "notifications")
RUNNING_SERVICES = ("kafka", "consul", "redis", *APP_SERVICES)
HEALTHY_TIMEOUT = 180.0


@dataclass
class Stack:
    project: ComposeProject
    gateway: Gateway
    consul_url: str
    logs_file: Path

    def healthy_instances(self, service: str) -> list[dict[str, Any]]:
        url = f"{self.consul_url}/v1/health/service/{service}?passing"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return list(json.loads(answer.read()))


@pytest.fixture(scope="module")
def stack(meshctl_stack: MeshctlStack) -> Stack:
    logs = Path(os.environ.get("MESH_COMPOSE_LOGS") or meshctl_stack.home / "compose.log")
    return Stack(meshctl_stack.project, meshctl_stack.gateway, meshctl_stack.consul_url, logs)


def containers_by_service(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for info in stack.project.inspect():
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        grouped.setdefault(service, []).append(info)
    return grouped


def test_every_container_turns_healthy(stack: Stack) -> None:
    def all_healthy() -> dict[str, list[dict[str, Any]]] | None:
        grouped = containers_by_service(stack)
        states = {
            container_name(info): health_of(info) for infos in grouped.values() for info in infos
        }
        broken = {
            name: state
            for name, state in states.items()
            if state == "unhealthy" or (state.startswith("exited") and "kafka-init" not in name)
        }
        assert not broken, f"containers failed: {broken} (logs: {stack.logs_file})"
        init = [health_of(info) for info in grouped.get("kafka-init", [])]
        assert all(s == "exited(0)" or not s.startswith("exited") for s in init), init
        if not set(RUNNING_SERVICES) <= set(grouped) or init != ["exited(0)"]:
            return None
        waiting = [n for n, s in states.items() if s != "healthy" and "kafka-init" not in n]
        return None if waiting else grouped

    grouped = wait_for(
        all_healthy, timeout=HEALTHY_TIMEOUT, interval=1.0, what="every container healthy"
    )
    assert set(grouped) == {*RUNNING_SERVICES, "kafka-init"}
    for service in APP_SERVICES:
        assert len(grouped[service]) == 1, service


def test_containers_run_as_the_compose_file_says(stack: Stack) -> None:
    grouped = containers_by_service(stack)
    for service in RUNNING_SERVICES:
        for info in grouped[service]:
            host = info["HostConfig"]
            name = container_name(info)
            assert host["Memory"] > 0 and host["NanoCpus"] > 0, f"{name}: no limits"
            assert host["ReadonlyRootfs"], f"{name}: writable root filesystem"
            assert host["LogConfig"]["Config"].get("max-size") == "10m", name
            assert host["RestartPolicy"]["Name"] == "unless-stopped", name
            assert info["Config"]["User"] not in ("", "0", "root"), f"{name} runs as root"
            for bindings in (host.get("PortBindings") or {}).values():
                assert all(b["HostIp"] == "127.0.0.1" for b in bindings), f"{name}: {bindings}"
    gateway = grouped["gateway"][0]
    assert gateway["Config"]["User"] == "10001:10001"
    assert gateway["Config"]["StopTimeout"] >= 25
    # Logs: one JSON object a line, naming the service.
    orders = grouped["orders"][0]["Id"]
    lines = [line for line in _logs(orders).splitlines() if line.startswith("{")]
    assert lines, "orders wrote no JSON log line"
    assert json.loads(lines[0])["service"] == "orders"


def _logs(container: str) -> str:
    """Both streams: the kit may log to either."""
    done = subprocess.run(
        ["docker", "logs", container], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout + done.stderr


def wait_confirmed(gateway: Gateway, order_ids: list[str], timeout: float) -> None:
    pending = set(order_ids)

    def settled() -> bool:
        for order_id in sorted(pending):
            answer = gateway.order(order_id)
            assert answer.status == 200, f"GET {order_id}: {answer.status} {answer.body}"
            status = answer.body["status"]
            assert status != "CANCELLED", f"{order_id} cancelled: {answer.body.get('reason')}"
            if status == "CONFIRMED":
                pending.discard(order_id)
        return not pending

    wait_for(settled, timeout=timeout, interval=0.5, what=f"{len(pending)} orders CONFIRMED")


def test_orders_are_confirmed_through_the_gateway(stack: Stack) -> None:
    # No key: 401; a wrong key: 403 (the gateway's answers on every runtime).
    assert Gateway(stack.gateway.base_url, "").request("GET", "/api/stock").status == 401
    wrong = Gateway(stack.gateway.base_url, "not-a-valid-key-0123456789")
    assert wrong.request("GET", "/api/stock").status == 403

    # Services register in Consul a moment after turning healthy: 503 until then.
    wait_for(
        lambda: all(stack.healthy_instances(s) for s in APP_SERVICES[1:]),
        timeout=60,
        what="every service passing in Consul",
    )
    order_ids = []
    for n in range(5):
        answer = stack.gateway.place_order(f"c-compose-{n}", sku=f"SKU-00{n % 3 + 1}")
        assert answer.status == 202, answer.body
        assert answer.body["status"] == "PENDING"
        assert answer.headers.get("Location", "").endswith(answer.body["id"])
        assert answer.headers.get("X-Mesh-Upstream-Version") == "v1"
        order_ids.append(answer.body["id"])
    wait_confirmed(stack.gateway, order_ids, timeout=60)


def orders_served(container_id: str) -> float:
    """POSTs to /orders a replica answered, from its own /metrics (read inside it)."""
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:8080/metrics', timeout=3).read().decode())"
    )
    text = docker("exec", container_id, "python", "-c", script, timeout=30)
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and 'method="POST"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_stopping_a_replica_loses_no_request(stack: Stack) -> None:
    stack.project.compose(
        "up", "-d", "--no-build", "--no-recreate", "--scale", "orders=2", timeout=300
    )

    def two_passing() -> list[dict[str, Any]] | None:
        infos = stack.project.inspect("orders")
        if len(infos) != 2 or any(health_of(i) != "healthy" for i in infos):
            return None
        instances = stack.healthy_instances("orders")
        return infos if len(instances) == 2 else None

    replicas = wait_for(two_passing, timeout=120, what="2 orders replicas healthy and passing")
    addresses = {i["Service"]["Address"] for i in stack.healthy_instances("orders")}
    ips = {
        next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"] for info in replicas
    }
    assert addresses == ips, "each replica must advertise its own container address"

    victim = max(replicas, key=lambda info: container_name(info))
    traffic = Traffic(stack.gateway)
    traffic.start()
    try:
        # The replica to stop must be taking its share of the traffic first.
        wait_for(
            lambda: orders_served(victim["Id"]) >= 3,
            timeout=60,
            what=f"{container_name(victim)} serving orders",
        )
        before = traffic.count()
        started = time.monotonic()
        docker("stop", victim["Id"], timeout=120)
        stop_seconds = time.monotonic() - started
        wait_for(
            lambda: traffic.count() >= before + 60 or None,
            timeout=60,
            what="traffic after the stop",
        )
    finally:
        traffic.stop()

    assert traffic.failures == [], f"{len(traffic.failures)} failed: {traffic.failures[:5]}"
    state = json.loads(docker("inspect", victim["Id"]))[0]["State"]
    assert state["ExitCode"] == 0, f"the replica did not shut down cleanly: {state}"
    assert stop_seconds < 25, f"docker stop took {stop_seconds:.1f}s (grace is 20s)"
    wait_for(
        lambda: len(stack.healthy_instances("orders")) == 1,
        timeout=30,
        what="the stopped replica gone from Consul",
    )
    print(
        f"\n{traffic.count()} requests, {len(traffic.order_ids)} orders, stop {stop_seconds:.1f}s"
    )
    wait_confirmed(stack.gateway, traffic.order_ids, timeout=120)
    # Back to where the session's other tests start: one orders replica.
    docker("rm", victim["Id"])
    stack.project.compose(
        "up", "-d", "--no-build", "--no-recreate", "--no-deps", "--scale", "orders=1", "orders"
    )
