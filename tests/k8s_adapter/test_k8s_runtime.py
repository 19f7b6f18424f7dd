"""K8sRuntime against the fake API server: status, replicas, scale, HPAs and rolling rollouts."""

from __future__ import annotations

import pytest
from conftest import runtime_for
from fake_kube_api import FakeApiServer, FakeCluster
from kubernetes import client

from infra.k8s.cluster import KILL_CONTAINER
from infra.k8s.objects import versioned_deployment
from infra.k8s.runtime import K8sRuntime, _replica
from infra.runtime.base import RuntimeFailure
from infra.runtime.models import RolloutSpec


def patches(api: FakeApiServer, fragment: str) -> list[tuple[str, str, object]]:
    return [
        (p, kind, body)
        for m, p, kind, body in api.cluster.requests
        if m == "PATCH" and fragment in p
    ]


def test_status_has_the_design_shape(runtime: K8sRuntime) -> None:
    status = runtime.status()
    assert status.runtime == "k8s"
    assert status.gateway is not None
    assert status.gateway.url == "http://127.0.0.1:8080"
    assert status.gateway.api_key == "test-key"
    assert status.gateway.healthy
    names = [s.name for s in status.services]
    assert names == ["orders", "payments"]  # the gateway is not a service
    orders = status.service("orders")
    assert orders is not None
    # orders (v1, 3 pods) and the canary Deployment orders-v2 (1 pod) are one service.
    assert (orders.replicas, orders.healthy) == (4, 4)
    assert orders.versions == {"v1": 3, "v2": 1}
    assert orders.desired == {"v1": 3, "v2": 1}
    assert orders.stable == "v1"
    assert orders.rollout is None
    assert status.model_dump(mode="json")["services"][0]["name"] == "orders"
    # Only mesh.demo/tier=app Deployments are services (jaeger is infra); the infra parts are
    # the StatefulSets.
    assert set(status.infra) == {"kafka", "redis", "consul"}
    assert status.infra["kafka"] == {
        "address": None,
        "source": "statefulset/kafka",
        "healthy": True,
        "replicas": 1,
        "ready": 1,
    }


def test_replicas_are_pods_with_version_address_and_state(runtime: K8sRuntime) -> None:
    replicas = runtime.replicas("orders")
    assert len(replicas) == 4
    assert sorted(r.version for r in replicas) == ["v1", "v1", "v1", "v2"]
    first = replicas[0]
    assert first.service == "orders"
    assert first.state == "ready" and first.passing
    assert first.address.endswith(":8080") and first.port == 8080
    assert first.id.startswith("orders-")
    # The infrastructure's pods (kafka-0, jaeger...) are no replicas of a service.
    assert {r.service for r in runtime.replicas()} == {"gateway", "orders", "payments"}


def test_scale_patches_the_scale_subresource_and_the_hpa_floor(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    result = runtime.scale("orders", 5)
    [(path, kind, body)] = patches(api, "/deployments/orders/scale")
    assert path == "/apis/apps/v1/namespaces/mesh/deployments/orders/scale"
    assert kind == "application/strategic-merge-patch+json"
    assert body == {"spec": {"replicas": 5}}
    # The orders HPA (1..4) would scale it back: its floor goes up, its ceiling to at least 5.
    [(hpa_path, _, hpa_body)] = patches(api, "/horizontalpodautoscalers/orders")
    assert hpa_path.startswith("/apis/autoscaling/v2/namespaces/mesh/")
    assert hpa_body == {"spec": {"minReplicas": 5, "maxReplicas": 5}}
    # It returns at once; the controller adds the pods one read at a time.
    assert result.desired["v1"] == 5
    assert result.versions["v1"] < 5
    done = runtime.wait_healthy("orders", 6, timeout=10, interval=0.01)  # 5 + the canary pod
    assert done.versions == {"v1": 5, "v2": 1}


def test_scale_of_an_unknown_service_is_one_clear_line(runtime: K8sRuntime) -> None:
    with pytest.raises(RuntimeFailure, match=r'deployments.apps "nope" not found \(404\)'):
        runtime.scale("nope", 2)


def test_autoscale_reads_the_hpas(runtime: K8sRuntime) -> None:
    state = runtime.autoscale()
    assert state.enabled
    assert set(state.services) == {"gateway", "orders", "payments"}
    [decision] = state.services["orders"]
    assert (decision.current, decision.desired) == (3, 3)
    assert (decision.min_replicas, decision.max_replicas) == (1, 4)
    [cpu] = decision.metrics
    assert (cpu.name, cpu.value, cpu.target) == ("cpu", 35, 70.0)
    assert cpu.ratio == pytest.approx(0.5)
    assert decision.reason.startswith("ValidMetricFound")


def test_autoscale_off_pins_every_hpa_and_on_gives_back_its_range(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    """What the autoscale drill does: on (it used to raise on k8s), then back off."""
    hpa = api.cluster.hpas["orders"]
    off = runtime.autoscale(False)
    assert not off.enabled
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)  # runs 3
    assert hpa["metadata"]["annotations"]["mesh.demo/autoscale-paused"] == '{"min": 1, "max": 4}'
    # meshctl scale while paused keeps it pinned, at the new count.
    runtime.scale("orders", 2)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 2)
    on = runtime.autoscale(True)
    assert on.enabled
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert "mesh.demo/autoscale-paused" not in hpa["metadata"].get("annotations", {})
    assert runtime.autoscale(True).enabled  # nothing paused: nothing to do, no error


def test_autoscale_on_without_metrics_server_says_what_is_missing(registry: str) -> None:
    with FakeApiServer(FakeCluster(consul_addr=registry, metrics_server=False)) as api:
        with runtime_for(api, registry) as runtime:
            with pytest.raises(RuntimeFailure, match=r"FailedGetResourceMetric.*metrics-server"):
                runtime.autoscale(True)


def test_scale_with_keda_raises_the_scaled_objects_floor(registry: str) -> None:
    """KEDA owns the HPA of a ScaledObject and writes it back: the floor goes on the
    ScaledObject (a JSON merge patch), and KEDA's HPA then carries it."""
    with FakeApiServer(FakeCluster(consul_addr=registry, keda=True)) as api:
        with runtime_for(api, registry) as runtime:
            assert "orders" not in api.cluster.hpas  # the CPU HPA made way for KEDA's
            runtime.scale("orders", 3)
            so = api.cluster.scaled_objects["orders"]
            assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (3, 4)
            [(_, kind, body)] = patches(api, "/scaledobjects/orders")
            assert kind == "application/merge-patch+json"
            assert body == {"spec": {"minReplicaCount": 3, "maxReplicaCount": 4}}
            runtime.status()  # a read: KEDA reconciles
            assert api.cluster.hpas["keda-hpa-orders"]["spec"]["minReplicas"] == 3
            state = runtime.autoscale(False)
            assert not state.enabled
            assert so["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"] == "3"
            assert "keda-hpa-orders" not in api.cluster.hpas  # KEDA drops it while paused
            assert runtime.autoscale(True).enabled
            assert "autoscaling.keda.sh/paused-replicas" not in so["metadata"]["annotations"]
            assert api.cluster.hpas["keda-hpa-orders"]["spec"]["minReplicas"] == 3


def test_a_rollout_gives_the_pods_the_resources_of_the_version_file(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    """orders v4 (LIMITS_MEMORY=none): the memory limit is deleted, not kept from v1; the
    versioned Deployment (a canary's, a green's) gets its version's resources too (v5: 128Mi)."""

    def resources(name: str) -> dict:
        return dict(api.cluster.deployments[name]["spec"]["template"]["spec"]["containers"][0]
                    .get("resources") or {})  # fmt: skip

    runtime.rollout(RolloutSpec(service="orders", version="v4"))
    assert runtime.wait_rollout("orders", timeout=10, interval=0.01).phase == "completed"
    assert resources("orders") == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m"},
    }
    stable = api.cluster.deployments["orders"]
    versioned = versioned_deployment(stable, "orders", "v5", 1)
    [container] = versioned["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "128Mi"}


def test_rolling_rollout_follows_rollout_status_until_done(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    started = runtime.rollout(RolloutSpec(service="orders", version="v2"))
    assert started.phase == "progressing"
    assert (started.stable, started.version, started.strategy) == ("v1", "v2", "rolling")
    [(_, kind, body)] = patches(api, "/deployments/orders")
    assert kind == "application/strategic-merge-patch+json"
    assert isinstance(body, dict)
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container == {
        "name": "app",
        "env": [{"name": "SERVICE_VERSION", "value": "v2"}],
        # The version files' resources (defaults.env: orders v2 has no file).
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
    }
    deployment = api.cluster.deployments["orders"]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["SERVICE_VERSION"] == "v2" and "POD_NAME" in env  # merged, not replaced
    with pytest.raises(RuntimeFailure, match="already has a rollout in progress"):
        runtime.rollout(RolloutSpec(service="orders", version="v3"))

    during = runtime.status().service("orders")
    assert during is not None and during.rollout == "progressing"

    lines: list[str] = []
    done = runtime.wait_rollout("orders", timeout=10, interval=0.01, progress=lines.append)
    assert done.phase == "completed"
    assert done.message == "deployment 'orders' successfully rolled out"
    assert done.step == 3 and done.finished_at is not None
    # The kubectl rule, step by step: spec observed, new replicas, old ones draining.
    assert "waiting for the deployment spec update to be observed" in lines
    assert "1 out of 3 new replicas have been updated" in lines
    assert "1 old replicas are pending termination" in lines
    orders = runtime.status().service("orders")
    assert orders is not None
    assert orders.versions == {"v2": 4}  # 3 from orders, 1 from the canary Deployment
    assert orders.stable == "v2" and orders.rollout is None
    with pytest.raises(RuntimeFailure, match="already runs v2"):
        runtime.rollout(RolloutSpec(service="orders", version="v2"))


def test_rollout_fails_on_progress_deadline_exceeded(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    api.cluster.stuck.add("payments")
    runtime.rollout(RolloutSpec(service="payments", version="v3"))
    failed = runtime.wait_rollout("payments", timeout=10, interval=0.01)
    assert failed.phase == "failed"
    assert failed.message == (
        "deployment 'payments' exceeded its progress deadline "
        "(meshctl rollout abort payments goes back to v1)"
    )
    # The abort puts the old version back in the template and follows that rollout.
    api.cluster.stuck.clear()
    aborting = runtime.rollout_abort("payments")
    assert aborting.phase == "aborting"
    assert api.cluster.deployments["payments"]["metadata"]["labels"]["mesh.demo/version"] == "v1"
    final = runtime.wait_rollout("payments", timeout=10, interval=0.01)
    assert final.phase == "aborted"


def test_what_meshctl_does_not_do_on_k8s_says_so(runtime: K8sRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="no rollout of orders in progress"):
        runtime.rollout_promote("orders")
    with pytest.raises(RuntimeFailure, match="make k8s-up"):
        runtime.up()
    assert runtime.rollout_status("orders") is None
    with pytest.raises(RuntimeFailure, match="no rollout of orders in progress"):
        runtime.rollout_abort("orders")


def test_a_rolling_update_has_nothing_to_promote(runtime: K8sRuntime) -> None:
    runtime.rollout(RolloutSpec(service="payments", version="v2"))
    with pytest.raises(RuntimeFailure, match="a rolling update has nothing to promote"):
        runtime.rollout_promote("payments")
    assert runtime.wait_rollout("payments", timeout=10, interval=0.01).phase == "completed"


def test_kill_replica_sigkills_the_app_through_exec_and_the_pod_restarts_it(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    """A crash, not a deletion: even gracePeriodSeconds=0 gets a SIGTERM from the kubelet."""
    pod = runtime.replicas("payments")[0]
    killed = runtime.kill_replica(pod.id)
    assert killed.id == pod.id and killed.last_exit == 137
    assert api.cluster.deleted_pods == []
    assert api.cluster.execs == [(pod.id, "app", ["sh", "-c", KILL_CONTAINER])]
    after = next(r for r in runtime.replicas("payments") if r.id == pod.id)
    assert after.restarts == 1 and not after.passing  # same pod, its container restarted
    payments = runtime.wait_healthy("payments", 2, timeout=10, interval=0.01)
    assert payments.healthy == 2


def test_kill_replica_refuses_a_pod_whose_app_is_pid_1(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    template = api.cluster.deployments["payments"]["spec"]["template"]["spec"]
    for rs in api.cluster.replicasets.values():
        if rs["metadata"]["name"].startswith("payments-"):
            rs["spec"]["template"]["spec"].pop("shareProcessNamespace", None)
    template.pop("shareProcessNamespace", None)
    pod = runtime.replicas("payments")[0]
    with pytest.raises(RuntimeFailure, match="ignores a SIGKILL sent from inside"):
        runtime.kill_replica(pod.id)
    assert api.cluster.execs == []


def test_kill_replica_with_term_deletes_the_pod_gracefully(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    pod = runtime.replicas("payments")[0]
    assert runtime.kill_replica(pod.id, "TERM").state == "stopping"
    assert api.cluster.deleted_pods == [(pod.id, None)]
    stopping = [r for r in runtime.replicas("payments") if r.id == pod.id]
    assert [r.state for r in stopping] == ["stopping"]


def test_an_unreachable_api_server_is_one_line() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    runtime = K8sRuntime(api_client=client.ApiClient(configuration))
    assert runtime.running() is False
    with pytest.raises(RuntimeFailure, match="did not answer"):
        runtime.status()


def test_a_replica_says_it_was_oom_killed_and_shows_its_limits() -> None:
    """What the kubelet reports of an app container killed above its memory limit
    (``lastState.terminated.reason: OOMKilled``) and the limits of its pod spec."""
    app = client.V1Container(
        name="orders",
        resources=client.V1ResourceRequirements(limits={"memory": "128Mi", "cpu": "500m"}),
        ports=[client.V1ContainerPort(name="http", container_port=8080)],
    )
    killed = client.V1ContainerStatus(
        name="orders",
        image="mesh-demo/orders:0.1.0",
        image_id="",
        ready=True,
        restart_count=2,
        started=True,
        last_state=client.V1ContainerState(
            terminated=client.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
        ),
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="orders-v5-abc", labels={"app.kubernetes.io/name": "orders"}
        ),
        spec=client.V1PodSpec(containers=[app]),
        status=client.V1PodStatus(
            phase="Running",
            pod_ip="10.0.0.7",
            conditions=[client.V1PodCondition(type="Ready", status="True")],
            container_statuses=[killed],
        ),
    )
    replica = _replica(pod)
    assert (replica.restarts, replica.last_reason, replica.oom_kills) == (2, "OOMKilled", 1)
    assert replica.memory_limit_bytes == 128 * 2**20 and replica.cpu_limit_millicores == 500
    assert replica.rss_bytes is None  # the metrics API is not read

    killed.last_state = None
    app.resources = None
    plain = _replica(pod)
    assert (plain.last_reason, plain.oom_kills, plain.memory_limit_bytes) == (None, 0, None)
