"""Blue-green and canary on the k8s runtime: the shared strategies, driven by this process,
against the fake API server (versioned Deployments, the gateway's metrics and smoke requests
through the proxy subresources) and the development registry (the weights)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest
from conftest import runtime_for
from fake_kube_api import BLUEGREEN, FakeApiServer, FakeCluster

from gateway.discovery import TRAFFIC_PREFIX
from infra.k8s.runtime import K8sRuntime
from infra.runtime.base import RuntimeFailure
from infra.runtime.models import RolloutSpec, RolloutStatus

FAST = {"ready_timeout": 10.0, "interval": 0.05, "min_requests": 5}


def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (a deadline, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"still not true after {timeout}s"
        time.sleep(0.005)
    return value


def finish(runtime: K8sRuntime, service: str, lines: list[str] | None = None) -> RolloutStatus:
    seen = [] if lines is None else lines
    return runtime.wait_rollout(service, timeout=20, interval=0.01, progress=seen.append)


def env_of(api: FakeApiServer, name: str) -> dict[str, Any]:
    container = api.cluster.deployments[name]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def weights_now(api: FakeApiServer, service: str) -> list[dict[str, int] | None]:
    """What the gateway saw, plus what it sees now (one more read of Consul KV)."""
    api.cluster.gateway.weights(service)
    return api.cluster.gateway.weights_seen[service]


def created(api: FakeApiServer) -> list[dict[str, Any]]:
    return [
        body
        for method, path, _, body in api.cluster.requests
        if method == "POST" and path.endswith("/deployments")
    ]


def test_bluegreen_switches_at_once_and_the_stable_deployment_takes_the_version(
    api: FakeApiServer, runtime: K8sRuntime, consul_kv: consul.Consul
) -> None:
    gateway = api.cluster.gateway
    gateway.traffic["payments"] = 20
    spec = RolloutSpec(
        service="payments",
        version="v2",
        strategy="bluegreen",
        keep_blue=0.05,
        smoke_requests=2,
        ready_timeout=10,
    )
    started = runtime.rollout(spec)
    assert (started.strategy, started.stable, started.version) == ("bluegreen", "v1", "v2")
    lines: list[str] = []
    done = finish(runtime, "payments", lines)
    assert done.phase == "completed", done.message
    assert done.message == "payments now runs v2 on 2 replicas; v1 stopped"

    # Green: a copy of blue's template with the version changed, owned by payments.
    [green] = created(api)
    assert green["metadata"]["name"] == "payments-v2"
    assert green["metadata"]["labels"]["mesh.demo/version"] == "v2"
    assert green["metadata"]["labels"]["app.kubernetes.io/name"] == "payments"
    assert green["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshctl"
    [owner] = green["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("Deployment", "payments")
    assert green["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "payments",
        "mesh.demo/version": "v2",
    }
    template = green["spec"]["template"]
    assert template["metadata"]["labels"]["mesh.demo/version"] == "v2"
    assert template["spec"]["containers"][0]["env"][0] == {"name": "SERVICE_VERSION", "value": "v2"}
    assert green["spec"]["replicas"] == 2

    # The gateway saw blue only, then green only, then no weights: never a split.
    assert weights_now(api, "payments") == [{"v1": 100, "v2": 0}, {"v1": 0, "v2": 100}, None]
    assert consul_kv.kv.get(TRAFFIC_PREFIX + "payments")[1] is None
    # Two smoke requests pinned to green, through the gateway's Service, with the API key.
    smokes = [(p, h["x-mesh-version"], h["x-api-key"]) for p, h in gateway.smokes]
    assert smokes == [("/api/payments/smoke-check", "v2", "test-key")] * 2
    # Capacity never fell below the 2 replicas it had, and no request met a service without
    # an instance; green served after the switch.
    assert all(sum(ready.values()) >= 2 for ready in api.cluster.ready_log["payments"])
    assert gateway.unroutable.get("payments", 0) == 0
    assert gateway.served[("payments", "v2")] > 0
    # The stable Deployment runs v2 (same name, same HPA), green is gone.
    assert "payments-v2" not in api.cluster.deployments
    assert env_of(api, "payments")["SERVICE_VERSION"] == "v2"
    assert api.cluster.deployments["payments"]["metadata"]["labels"]["mesh.demo/version"] == "v2"
    payments = runtime.status().service("payments")
    assert payments is not None
    assert (payments.versions, payments.stable, payments.rollout) == ({"v2": 2}, "v2", None)
    assert any(line.startswith("switched: all traffic on v2") for line in lines)
    assert "smoke check: 2 x GET /api/payments/smoke-check pinned to v2 answered" in lines
    # v1 is in the stable Deployment's selector: a versioned payments-v1 would steal its pods.
    with pytest.raises(RuntimeFailure, match="payments-v1 would select the pods of deployment"):
        runtime.rollout(RolloutSpec(service="payments", version="v1", strategy="canary"))


def test_canary_with_a_healthy_version_completes_through_its_steps(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    api.cluster.gateway.traffic["orders"] = 100
    spec = RolloutSpec(
        service="orders", version="v2", strategy="canary", steps=[20, 50, 100], **FAST
    )
    runtime.rollout(spec)
    done = finish(runtime, "orders")
    assert done.phase == "completed", done.message
    assert [(a.weight, a.verdict) for a in done.analyses] == [
        (20, "pass"),
        (50, "pass"),
        (100, "pass"),
    ]
    assert all(a.requests >= 5 and a.errors == 0 for a in done.analyses)
    assert weights_now(api, "orders") == [
        {"v1": 100, "v2": 0},
        {"v1": 80, "v2": 20},
        {"v1": 50, "v2": 50},
        {"v1": 0, "v2": 100},
        None,
    ]
    # The canary component's orders-v2 was made a copy of the stable template (PUT, not a
    # second Deployment), scaled with the steps (1, 2, 3 of 3), then handed over and deleted.
    puts = [b for m, p, _, b in api.cluster.requests if m == "PUT" and p.endswith("/orders-v2")]
    assert len(puts) == 1 and "affinity" not in puts[0]["spec"]["template"]["spec"]
    scales = [
        b["spec"]["replicas"]
        for m, p, _, b in api.cluster.requests
        if m == "PATCH" and p.endswith("/deployments/orders-v2/scale")
    ]
    assert scales == [1, 2, 3]
    assert "orders-v2" not in api.cluster.deployments
    assert env_of(api, "orders")["SERVICE_VERSION"] == "v2"
    assert api.cluster.gateway.unroutable.get("orders", 0) == 0
    # The analysis read every gateway pod's metrics through the API server's pod proxy.
    scraped = {
        p.split("/")[-3]
        for m, p, _, _ in api.cluster.requests
        if m == "GET" and p.endswith("/proxy/metrics")
    }
    assert len(scraped) == 2 and all(
        s.startswith("gateway-") and s.endswith(":8080") for s in scraped
    )


def test_canary_whose_analysis_fails_is_rolled_back(
    api: FakeApiServer, runtime: K8sRuntime, consul_kv: consul.Consul
) -> None:
    gateway = api.cluster.gateway
    gateway.traffic["payments"] = 100
    gateway.errors[("payments", "v2")] = 0.5  # half of v2's answers are 500s
    spec = RolloutSpec(service="payments", version="v2", strategy="canary", steps=[50, 100], **FAST)
    runtime.rollout(spec)
    done = finish(runtime, "payments")
    assert done.phase == "aborted"
    assert done.message.startswith("analysis failed at 50%: error rate 50.0% > 1.0%")
    assert done.message.endswith("all traffic on v1, v2 stopped")
    [analysis] = done.analyses
    assert analysis.verdict == "fail" and analysis.errors > 0
    assert weights_now(api, "payments")[:2] == [{"v1": 100, "v2": 0}, {"v1": 50, "v2": 50}]
    assert consul_kv.kv.get(TRAFFIC_PREFIX + "payments")[1] is None
    # The canary is gone; the stable Deployment was never touched.
    assert "payments-v2" not in api.cluster.deployments
    assert env_of(api, "payments")["SERVICE_VERSION"] == "v1"
    assert not any(
        m in ("PATCH", "PUT") and p.endswith("/deployments/payments")
        for m, p, _, _ in api.cluster.requests
    )


def test_canary_whose_pods_crash_is_aborted_without_waiting_for_the_timeout(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    api.cluster.crashing.add("payments-v2")
    started = time.monotonic()
    runtime.rollout(
        RolloutSpec(
            service="payments", version="v2", strategy="canary", steps=[50, 100], ready_timeout=30
        )
    )
    done = finish(runtime, "payments")
    assert done.phase == "aborted"
    assert "payments v2 cannot start: pod payments-v2-" in done.message
    assert "CrashLoopBackOff (back-off 40s restarting failed container=app" in done.message
    assert time.monotonic() - started < 10
    assert "payments-v2" not in api.cluster.deployments


def test_green_is_not_switched_to_before_the_gateway_routes_to_it(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    api.cluster.gateway.blind.add(("payments", "v2"))  # ready pods, unknown to the gateway
    spec = RolloutSpec(service="payments", version="v2", strategy="bluegreen", ready_timeout=0.3)
    runtime.rollout(spec)
    done = finish(runtime, "payments")
    assert done.phase == "aborted"
    assert done.message.startswith(
        "payments v2: 2/2 ready after 0.3s (the gateway does not route to them yet)"
    )
    assert {"v1": 0, "v2": 100} not in weights_now(api, "payments")
    assert api.cluster.gateway.smokes == []
    assert "payments-v2" not in api.cluster.deployments


def test_a_paused_canary_finishes_on_promote(api: FakeApiServer, runtime: K8sRuntime) -> None:
    api.cluster.gateway.traffic["orders"] = 100
    runtime.rollout(
        RolloutSpec(service="orders", version="v2", strategy="canary", steps=[50], **FAST)
    )
    paused = finish(runtime, "orders")
    assert paused.phase == "paused"
    assert paused.message == "all steps passed: `meshctl rollout promote orders` to finish"
    assert paused.weights == {"v1": 50, "v2": 50}
    orders = runtime.status().service("orders")
    assert orders is not None and orders.rollout == "paused"
    assert orders.weights == {"v1": 50, "v2": 50}
    runtime.rollout_promote("orders")
    done = finish(runtime, "orders")
    assert done.phase == "completed", done.message
    assert weights_now(api, "orders")[-2:] == [{"v1": 0, "v2": 100}, None]
    assert env_of(api, "orders")["SERVICE_VERSION"] == "v2"


def test_abort_stops_a_canary_between_analyses(
    api: FakeApiServer, runtime: K8sRuntime, consul_kv: consul.Consul
) -> None:
    api.cluster.gateway.traffic["payments"] = 100
    spec = RolloutSpec(
        service="payments", version="v2", strategy="canary", steps=[50, 100], interval=60
    )
    runtime.rollout(spec)
    until(lambda: (s := runtime.rollout_status("payments")) and s.weights == {"v1": 50, "v2": 50})
    # While it runs, nothing else touches the service.
    with pytest.raises(RuntimeFailure, match="has a rollout in progress"):
        runtime.scale("payments", 4)
    with pytest.raises(RuntimeFailure, match="already has a rollout in progress"):
        runtime.rollout(RolloutSpec(service="payments", version="v3"))
    with pytest.raises(RuntimeFailure, match="already has a rollout in progress"):
        runtime.rollout(RolloutSpec(service="payments", version="v3", strategy="bluegreen"))
    started = time.monotonic()
    aborting = runtime.rollout_abort("payments")
    assert (aborting.service, aborting.version) == ("payments", "v2")
    done = finish(runtime, "payments")
    assert time.monotonic() - started < 10  # not the 60 s interval
    assert done.phase == "aborted"
    assert done.message == ("aborted by meshctl rollout abort; all traffic on v1, v2 stopped")
    assert consul_kv.kv.get(TRAFFIC_PREFIX + "payments")[1] is None
    assert "payments-v2" not in api.cluster.deployments
    with pytest.raises(
        RuntimeFailure, match=r"no rollout of payments in progress \(last: aborted\)"
    ):
        runtime.rollout_abort("payments")
    with pytest.raises(RuntimeFailure, match="no rollout of payments in progress"):
        runtime.rollout_promote("payments")


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_bluegreen_keeps_blue_until_promoted_or_aborted(
    api: FakeApiServer, runtime: K8sRuntime, action: str
) -> None:
    spec = RolloutSpec(
        service="payments", version="v2", strategy="bluegreen", keep_blue=60, ready_timeout=10
    )
    runtime.rollout(spec)
    until(lambda: (s := runtime.rollout_status("payments")) and s.weights == {"v1": 0, "v2": 100})
    getattr(runtime, f"rollout_{action}")("payments")
    lines: list[str] = []
    done = finish(runtime, "payments", lines)
    assert "payments-v2" not in api.cluster.deployments
    if action == "promote":
        assert done.phase == "completed", done.message
        assert "promoted: stopping blue now" in lines
        assert env_of(api, "payments")["SERVICE_VERSION"] == "v2"
    else:
        assert done.phase == "aborted", done.message
        assert env_of(api, "payments")["SERVICE_VERSION"] == "v1"
        # Switched back: blue got all the traffic again before green went away.
        assert weights_now(api, "payments")[-1] is None
    assert all(sum(ready.values()) >= 2 for ready in api.cluster.ready_log["payments"])


def test_a_failed_hand_over_puts_the_stable_deployment_back(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    # The stable Deployment's next rollout (taking v2 over from green) never progresses.
    api.cluster.stuck_once.add("payments")
    spec = RolloutSpec(
        service="payments", version="v2", strategy="bluegreen", keep_blue=0, smoke_requests=0
    )
    runtime.rollout(spec)
    done = finish(runtime, "payments")
    assert done.phase == "aborted"
    assert done.message.startswith(
        "payments taking over v2: deployment 'payments' exceeded its progress deadline"
    )
    assert env_of(api, "payments")["SERVICE_VERSION"] == "v1"
    payments = runtime.status().service("payments")
    assert payments is not None and payments.versions == {"v1": 2}
    assert "payments-v2" not in api.cluster.deployments
    assert weights_now(api, "payments")[-1] is None
    assert api.cluster.gateway.unroutable.get("payments", 0) == 0


def test_exiting_meshctl_finishes_what_runs_and_rolls_back_what_waits_for_a_promote(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    api.cluster.gateway.traffic["orders"] = 100
    runtime.rollout(
        RolloutSpec(service="orders", version="v2", strategy="canary", steps=[50], **FAST)
    )
    assert finish(runtime, "orders").phase == "paused"
    # Two rollouts at once in one meshctl: the canary waits for a promote, the blue-green runs.
    spec = RolloutSpec(service="payments", version="v2", strategy="bluegreen", keep_blue=0.2)
    runtime.rollout(spec)
    runtime.driver.on_exit()  # what atexit calls when meshctl's main returns
    orders, payments = runtime.rollout_status("orders"), runtime.rollout_status("payments")
    assert orders is not None and payments is not None
    # Nothing could promote the canary once meshctl is gone: rolled back. The blue-green was
    # waited for.
    assert orders.phase == "aborted" and env_of(api, "orders")["SERVICE_VERSION"] == "v1"
    assert payments.phase == "completed" and env_of(api, "payments")["SERVICE_VERSION"] == "v2"
    assert not {"orders-v2", "payments-v2"} & set(api.cluster.deployments)


@pytest.fixture
def bluegreen_api(registry: str) -> Iterator[FakeApiServer]:
    with FakeApiServer(FakeCluster(consul_addr=registry, extra=[BLUEGREEN])) as server:
        yield server


def test_bluegreen_reuses_the_components_green_and_its_hpa(
    bluegreen_api: FakeApiServer, registry: str, consul_kv: consul.Consul
) -> None:
    api = bluegreen_api
    with runtime_for(api, registry) as runtime:
        spec = RolloutSpec(service="payments", version="v2", strategy="bluegreen", keep_blue=0)
        runtime.rollout(spec)
        done = finish(runtime, "payments")
    assert done.phase == "completed", done.message
    assert created(api) == []  # payments-v2 was there: replaced, not created
    floors = [
        b["spec"]
        for m, p, _, b in api.cluster.requests
        if m == "PATCH" and p.endswith("/horizontalpodautoscalers/payments-v2")
    ]
    assert floors == [{"minReplicas": 2, "maxReplicas": 4}]
    deletes = [
        p.split("?")[0].rsplit("/", 2)[-2:] for m, p, _, _ in api.cluster.requests if m == "DELETE"
    ]
    assert sorted(deletes) == [
        ["deployments", "payments-v2"],
        ["horizontalpodautoscalers", "payments-v2"],
    ]
    assert set(api.cluster.hpas) == {"gateway", "orders", "payments"}


def test_what_would_fail_half_way_is_refused_up_front(
    api: FakeApiServer, runtime: K8sRuntime, registry: str
) -> None:
    def refused(match: str, **spec: Any) -> None:
        with pytest.raises(RuntimeFailure, match=match):
            runtime.rollout(RolloutSpec(**spec))

    refused(
        "the gateway weighs the services' versions",
        service="gateway",
        version="v2",
        strategy="canary",
    )
    refused(
        "orders-v2 runs v2 beside orders: the weights name two versions only",
        service="orders",
        version="v3",
        strategy="canary",
    )
    refused("payments already runs v1", service="payments", version="v1", strategy="bluegreen")
    refused('deployments.apps "nope" not found', service="nope", version="v2", strategy="canary")
    with runtime_for(api, registry, MESH_API_KEY="") as keyless:
        with pytest.raises(RuntimeFailure, match="need the gateway's API key in MESH_API_KEY"):
            keyless.rollout(RolloutSpec(service="payments", version="v2", strategy="bluegreen"))
    with runtime_for(api, "http://127.0.0.1:9") as cut_off:
        with pytest.raises(RuntimeFailure, match="port-forward svc/consul 8500:8500"):
            cut_off.rollout(RolloutSpec(service="payments", version="v2", strategy="canary"))
    # Nothing was created or patched on the way.
    assert created(api) == []
    assert not [r for r in api.cluster.requests if r[0] in ("PATCH", "PUT", "DELETE")]
