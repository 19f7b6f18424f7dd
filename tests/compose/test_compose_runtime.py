"""meshctl's compose adapter (``infra/compose``) against the real stack on a real engine.

Run by ``make test-compose`` like the other stack tests (same skip rule), on the session's
stack (``conftest.py``: ``meshctl up``); the runtime finds it the way meshctl does, from the
``state.env`` that ``meshctl up`` wrote.

1. ``status`` has the DESIGN.md shape (and ``meshctl status --json`` prints it), one replica
   per container, the lag of a consumer group read from the replicas' /metrics;
2. ``scale`` to 2 and back to 1;
3. ``kill_replica`` and the replica comes back, and the saga still completes;
4. a blue-green rollout of orders to v2, then a canary back to v1, under continuous
   requests: both complete and no request fails;
5. Kafka stopped and started with ``stop_infra``/``start_infra``: an order placed during the
   outage still reaches a terminal state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from compose_support import ROOT, Gateway, Traffic, docker, wait_for
from conftest import MeshctlStack

from infra.compose.detect import running_runtime
from infra.compose.runtime import ComposeRuntime
from infra.runtime import RuntimeFailure
from infra.runtime.models import RolloutSpec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]

SERVICES = ("orders", "inventory", "payments", "notifications")
INFRA = ("kafka", "redis", "consul", "kafka-init")
SERVICE_LABEL = "com.docker.compose.service"
TERMINAL = ("CONFIRMED", "CANCELLED")


def wait_terminal(
    gateway: Gateway, order_ids: list[str], timeout: float, want: tuple[str, ...] = ("CONFIRMED",)
) -> dict[str, str]:
    """Until every order is in one of ``want``. A 503 with Retry-After (no instance passing
    its check this instant) is polled again; any other answer fails."""
    pending, outcome = set(order_ids), {}

    def settled() -> bool:
        for order_id in sorted(pending):
            answer = gateway.order(order_id)
            if answer.status == 503 and "Retry-After" in answer.headers:
                continue
            assert answer.status == 200, f"GET {order_id}: {answer.status} {answer.body}"
            status = answer.body["status"]
            if status in TERMINAL:
                assert status in want, f"{order_id} {status}: {answer.body.get('reason')}"
                outcome[order_id] = status
                pending.discard(order_id)
        return not pending

    wait_for(settled, timeout=timeout, interval=0.5, what=f"{len(pending)} orders {want}")
    return outcome


def _timed(label: str, started: float) -> float:
    took = time.monotonic() - started
    print(f"\n{label}: {took:.1f}s")
    return took


@pytest.fixture(scope="module")
def stack(meshctl_stack: MeshctlStack) -> MeshctlStack:
    return meshctl_stack


@pytest.fixture(scope="module")
def healthy(stack: MeshctlStack) -> MeshctlStack:
    """Every service up, passing in Consul, and routed by the gateway."""
    started = time.monotonic()

    def gateway_healthy() -> bool:
        gateway = stack.runtime.status().gateway
        return gateway is not None and gateway.healthy

    wait_for(gateway_healthy, timeout=240, interval=1.0, what="the gateway healthy")
    for service in SERVICES:
        stack.runtime.wait_healthy(service, 1, timeout=240, interval=1.0)
    wait_for(
        lambda: all(stack.runtime.gateway_routes(s) for s in SERVICES),
        timeout=60,
        what="the gateway routing to every service",
    )
    _timed("stack healthy", started)
    return stack


def test_status_has_the_design_shape(healthy: MeshctlStack) -> None:
    runtime = healthy.runtime
    assert runtime.running()
    # meshctl's default when RUNTIME is unset: the runtime that runs.
    assert running_runtime(healthy.home, healthy.environ) == "compose"
    state = runtime.status()
    assert state.runtime == "compose"
    assert state.gateway is not None
    assert state.gateway.url == f"http://127.0.0.1:{healthy.gateway_port}"
    assert state.gateway.api_key == healthy.gateway.api_key
    assert state.gateway.healthy
    assert [s.name for s in state.services] == list(SERVICES)
    for service in state.services:
        assert (service.replicas, service.healthy) == (1, 1), service
        assert service.versions == {"v1": 1}
        assert service.stable == "v1"
    assert set(state.infra) == {"kafka", "redis", "consul"}
    assert all(part["healthy"] for part in state.infra.values()), state.infra
    assert runtime.consul_address() == f"http://127.0.0.1:{healthy.consul_port}"

    # One replica per container: the container name is its id, SERVICE_VERSION its version.
    names = {
        c["Name"].lstrip("/"): c for c in healthy.project.inspect() if "kafka-init" not in c["Name"]
    }
    replicas = {r.id: r for r in runtime.replicas()}
    app = {n for n, c in names.items() if c["Config"]["Labels"][SERVICE_LABEL] not in INFRA}
    assert set(replicas) == app
    for replica in replicas.values():
        assert (replica.version, replica.state, replica.passing) == ("v1", "ready", True)
        ip = next(iter(names[replica.id]["NetworkSettings"]["Networks"].values()))["IPAddress"]
        assert replica.address == f"{ip}:8080"
        # Use against limits: the RSS of the container's process as this machine reads it,
        # the limits as the engine applies them (HostConfig), no OOM kill yet.
        host = names[replica.id]["HostConfig"]
        assert replica.rss_bytes is not None and 20 * 2**20 < replica.rss_bytes < host["Memory"]
        assert replica.memory_limit_bytes == host["Memory"]
        assert replica.cpu_limit_millicores == host["NanoCpus"] // 1_000_000
        assert (replica.oom_kills, replica.last_reason) == (0, None)

    lag = runtime.consumer_lag("inventory")
    assert lag is not None and lag >= 0

    # meshctl itself finds the project from state.env and prints the same document.
    done = subprocess.run(
        [sys.executable, "-m", "infra.meshctl", "status", "--json"],
        env={**healthy.environ, "RUNTIME": "compose"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["runtime"] == "compose"
    assert printed["gateway"] == state.gateway.model_dump()
    assert [s["name"] for s in printed["services"]] == list(SERVICES)
    assert set(printed["infra"]) == {"kafka", "redis", "consul"}


def test_containers_run_with_the_limits_of_the_version_files(healthy: MeshctlStack) -> None:
    """What the engine really applies (docker inspect's HostConfig) is infra/versions/'s:
    defaults.env for docker-compose.yml's versions, gateway-v1.env's whole core, and the
    version file of a version a rollout starts (orders v5: 128Mi)."""
    mib = 2**20

    def limits(compose_service: str) -> list[tuple[int, int, int, int]]:
        return [
            (
                c["HostConfig"]["Memory"],
                c["HostConfig"]["MemoryReservation"],
                c["HostConfig"]["NanoCpus"],
                c["HostConfig"]["CpuShares"],
            )
            for c in healthy.project.inspect(compose_service)
        ]

    # CpuShares 0: docker's default weight (compose does not write the CPU request).
    assert limits("orders") == [(256 * mib, 128 * mib, 500_000_000, 0)]
    assert limits("gateway") == [(256 * mib, 128 * mib, 1_000_000_000, 0)]
    fleet = healthy.runtime.fleet
    fleet.set_version_replicas("orders", "v5", 1)
    try:
        assert limits("orders-v5") == [(128 * mib, 128 * mib, 500_000_000, 0)]
    finally:
        fleet.set_version_replicas("orders", "v5", 0)
        wait_for(
            lambda: not [c for c in fleet.version_containers("orders", "v5") if c.alive],
            timeout=60,
            what="orders v5 stopped",
        )
        fleet.prune_versions("orders")


def test_logs_of_a_service_and_an_unknown_name(
    healthy: MeshctlStack, capfd: pytest.CaptureFixture[str]
) -> None:
    assert healthy.runtime.show_logs("orders", follow=False) == 0
    out = capfd.readouterr().out
    assert '"service": "orders"' in out, out[-500:]
    with pytest.raises(RuntimeFailure, match="no logs for 'nope'"):
        healthy.runtime.show_logs("nope", follow=False)


def test_scale_to_two_and_back(healthy: MeshctlStack) -> None:
    runtime = healthy.runtime
    started = time.monotonic()
    status = runtime.scale("orders", 2)
    call = time.monotonic() - started
    assert status.name == "orders"
    runtime.wait_healthy("orders", 2, timeout=120, interval=0.5)
    up = _timed(f"orders 1 -> 2 healthy (scale() returned after {call:.1f}s)", started)
    addresses = {r.address for r in runtime.replicas("orders")}
    assert len(addresses) == 2
    wait_for(
        lambda: runtime.gateway_routes("orders") == addresses,
        timeout=30,
        what="the gateway routing to both replicas",
    )

    started = time.monotonic()
    runtime.scale("orders", 1)
    runtime.wait_healthy("orders", 1, timeout=120, interval=0.5)
    down = _timed("orders 2 -> 1", started)
    assert up < 120 and down < 60
    assert len(healthy.project.container_ids("orders")) == 1, "scale-down removes the container"


def test_killed_replica_comes_back(healthy: MeshctlStack) -> None:
    runtime = healthy.runtime
    victim = runtime.replicas("payments")[0]
    before = json.loads(docker("inspect", victim.id))[0]["State"]["StartedAt"]
    started = time.monotonic()
    killed = runtime.kill_replica(victim.id)
    assert killed.id == victim.id
    assert killed.state != "ready", "a replica that just restarted is not ready at once"
    runtime.wait_healthy("payments", 1, timeout=120, interval=0.5)
    _timed("payments killed -> healthy again", started)
    state = json.loads(docker("inspect", victim.id))[0]["State"]
    assert state["Running"] and state["StartedAt"] != before, "the same container, restarted"
    answer = healthy.gateway.place_order("c-after-kill")
    assert answer.status == 202, answer.body
    wait_terminal(healthy.gateway, [answer.body["id"]], timeout=90)


def _rollout(stack: MeshctlStack, spec: RolloutSpec, traffic: Traffic) -> float:
    runtime = stack.runtime
    started = time.monotonic()
    runtime.rollout(spec)
    # Another meshctl process sees it through the record this one keeps.
    other = ComposeRuntime(stack.home, stack.environ)
    seen = other.rollout_status(spec.service)
    assert seen is not None and seen.version == spec.version
    assert other.rollouts.active(spec.service)
    state = runtime.wait_rollout(spec.service, timeout=400, progress=print)
    took = _timed(f"{spec.strategy} orders -> {spec.version}", started)
    assert state.phase == "completed", state.message
    assert traffic.failures == [], f"{len(traffic.failures)} failed: {traffic.failures[:5]}"
    return took


def test_bluegreen_then_canary_under_load_lose_no_request(healthy: MeshctlStack) -> None:
    runtime = healthy.runtime
    traffic = Traffic(healthy.gateway, clients=2, pause=0.2, prefix="c-rollout")
    traffic.start()
    try:
        wait_for(lambda: traffic.count() >= 10, timeout=60, what="traffic flowing")
        _rollout(
            healthy,
            RolloutSpec(service="orders", version="v2", strategy="bluegreen", keep_blue=2.0),
            traffic,
        )
        orders = runtime.status().service("orders")
        assert orders is not None
        assert (orders.versions, orders.stable) == ({"v2": 1}, "v2")
        assert healthy.gateway.place_order("c-on-v2").headers["X-Mesh-Upstream-Version"] == "v2"
        assert runtime.weights("orders") is None, "weights are cleared once v2 is stable"
        # Back to the compose file's own version, as a canary judged on live traffic.
        _rollout(
            healthy,
            RolloutSpec(
                service="orders",
                version="v1",
                strategy="canary",
                steps=[50, 100],
                interval=4.0,
                min_requests=3,
                max_p99=5.0,
            ),
            traffic,
        )
    finally:
        traffic.stop()
    assert traffic.failures == [], f"{len(traffic.failures)} failed: {traffic.failures[:5]}"
    orders = runtime.status().service("orders")
    assert orders is not None
    assert (orders.versions, orders.stable) == ({"v1": 1}, "v1")
    assert healthy.project.container_ids("orders-v2") == []
    overrides = list(runtime.project.state_dir.glob("override-*.yml"))
    assert overrides == [], "the override of a retired version is removed"
    print(f"\n{traffic.count()} requests, 0 failed; orders served by {traffic.served}")
    wait_terminal(healthy.gateway, traffic.order_ids, timeout=180)


def test_kafka_outage_and_back(healthy: MeshctlStack) -> None:
    runtime = healthy.runtime
    started = time.monotonic()
    runtime.stop_infra("kafka")
    kafka = runtime.status().infra["kafka"]
    assert not kafka["healthy"] and kafka["state"] == "exited", kafka
    # The orders outbox keeps the event until the broker is back.
    placed = healthy.gateway.place_order("c-during-outage")
    assert placed.status == 202, placed.body
    order_id = placed.body["id"]
    runtime.start_infra("kafka", progress=print)
    _timed("kafka stopped and started, topics created again", started)
    assert runtime.status().infra["kafka"]["healthy"]

    outcome = wait_terminal(healthy.gateway, [order_id], timeout=180, want=TERMINAL)
    _timed(f"order placed during the outage: {outcome[order_id]}", started)
