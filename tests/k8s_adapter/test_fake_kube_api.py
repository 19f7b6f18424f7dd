"""The fake API server does what a real one does where the adapter depends on it, checked
through the real kubernetes client: force deletion against graceful deletion, PATCH by
Content-Type (strategic merge only for built-in kinds), KEDA's ownership of the HPAs of its
ScaledObjects and its admission webhook, ``pods/exec`` over a WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_kube_api import FakeApiServer, FakeCluster
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

NS = "mesh"


@pytest.fixture
def kube() -> Iterator[tuple[FakeApiServer, client.ApiClient]]:
    with FakeApiServer(FakeCluster(keda=True)) as api:
        with client.ApiClient(client.Configuration(host=api.url)) as api_client:
            yield api, api_client


def pod_names(core: client.CoreV1Api, selector: str) -> dict[str, Any]:
    return {p.metadata.name: p for p in core.list_namespaced_pod(NS, label_selector=selector).items}


def call(api_client: client.ApiClient, method: str, path: str, body: Any, ctype: str) -> Any:
    return api_client.call_api(
        path,
        method,
        header_params={"Content-Type": ctype, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
        response_type="object",
        _return_http_data_only=True,
    )


def test_a_force_deletion_removes_the_pod_from_the_api_at_once(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    _, api_client = kube
    core = client.CoreV1Api(api_client)
    before = pod_names(core, "app.kubernetes.io/name=payments")
    victim = sorted(before)[0]
    core.delete_namespaced_pod(victim, NS, grace_period_seconds=0)
    after = pod_names(core, "app.kubernetes.io/name=payments")
    assert victim not in after  # no Terminating phase to see
    assert len(after) == len(before)  # the ReplicaSet replaced it at once
    [new] = set(after) - set(before)
    assert after[new].status.conditions[0].status == "False"  # not ready yet


def test_a_graceful_deletion_leaves_the_pod_terminating_for_a_while(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    _, api_client = kube
    core = client.CoreV1Api(api_client)
    victim = sorted(pod_names(core, "app.kubernetes.io/name=payments"))[0]
    answer = core.delete_namespaced_pod(victim, NS)
    assert answer.metadata.deletion_timestamp is not None
    seen = pod_names(core, "app.kubernetes.io/name=payments")
    assert seen[victim].metadata.deletion_timestamp is not None
    assert seen[victim].metadata.deletion_grace_period_seconds == 30  # the pod's own period
    assert seen[victim].status.conditions[0].status == "False"
    for _ in range(5):
        seen = pod_names(core, "app.kubernetes.io/name=payments")
    assert victim not in seen


def test_patch_semantics_follow_the_content_type(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    api, api_client = kube
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/payments"
    env = [{"name": "EXTRA", "value": "1"}]
    change = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}}}
    # Strategic merge: containers and env merge by name, so the image and the rest stay.
    call(api_client, "PATCH", path, change, "application/strategic-merge-patch+json")
    [app] = api.cluster.deployments["payments"]["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "mesh-demo/payments:0.1.0"
    names = [e["name"] for e in app["env"]]
    assert names[0] == "SERVICE_VERSION" and names[-1] == "EXTRA"
    # JSON merge patch (RFC 7386): the list is replaced whole.
    call(api_client, "PATCH", path, change, "application/merge-patch+json")
    [app] = api.cluster.deployments["payments"]["spec"]["template"]["spec"]["containers"]
    assert app == {"name": "app", "env": env}
    # JSON patch (RFC 6902), what the client sends for a list body.
    client.AppsV1Api(api_client).patch_namespaced_deployment(
        "payments",
        NS,
        [{"op": "replace", "path": "/spec/revisionHistoryLimit", "value": 2}],
    )
    assert api.cluster.deployments["payments"]["spec"]["revisionHistoryLimit"] == 2


def test_a_custom_resource_takes_no_strategic_merge(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    api, api_client = kube
    path = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects/orders"
    with pytest.raises(ApiException) as refused:
        call(
            api_client,
            "PATCH",
            path,
            {"spec": {"minReplicaCount": 2}},
            "application/strategic-merge-patch+json",
        )
    assert refused.value.status == 415
    assert "application/merge-patch+json" in str(refused.value.body)
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "keda.sh", "v1alpha1", NS, "scaledobjects", "orders", {"spec": {"minReplicaCount": 2}}
    )
    assert api.cluster.scaled_objects["orders"]["spec"]["minReplicaCount"] == 2


def test_keda_owns_the_hpa_of_a_scaled_object_and_writes_it_back(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    _, api_client = kube
    autoscaling = client.AutoscalingV2Api(api_client)
    hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("keda-hpa-orders", NS)
    [owner] = hpa.metadata.owner_references
    assert (owner.api_version, owner.kind, owner.name, owner.controller) == (
        "keda.sh/v1alpha1",
        "ScaledObject",
        "orders",
        True,
    )
    assert hpa.spec.scale_target_ref.name == "orders"
    assert {m.type for m in hpa.spec.metrics} == {"External", "Resource"}
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "keda-hpa-orders", NS, {"spec": {"minReplicas": 4, "maxReplicas": 4}}
    )
    again = autoscaling.read_namespaced_horizontal_pod_autoscaler("keda-hpa-orders", NS)
    assert (again.spec.min_replicas, again.spec.max_replicas) == (1, 4)  # the ScaledObject's


def test_keda_webhook_refuses_a_second_autoscaler_for_a_workload(
    kube: tuple[FakeApiServer, client.ApiClient],
) -> None:
    api, api_client = kube
    custom = client.CustomObjectsApi(api_client)
    so = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "gateway"},
        "spec": {
            "scaleTargetRef": {"name": "gateway"},
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}],
        },
    }
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NS, "scaledobjects", so)
    assert refused.value.status == 403
    assert "is already managed by the hpa 'gateway'" in str(refused.value.body)
    client.AutoscalingV2Api(api_client).delete_namespaced_horizontal_pod_autoscaler("gateway", NS)
    custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NS, "scaledobjects", so)
    assert "keda-hpa-gateway" in api.cluster.hpas


def test_without_keda_the_scaled_objects_are_no_resource() -> None:
    with FakeApiServer(FakeCluster()) as api:
        with client.ApiClient(client.Configuration(host=api.url)) as api_client:
            with pytest.raises(ApiException) as missing:
                client.CustomObjectsApi(api_client).list_namespaced_custom_object(
                    "keda.sh", "v1alpha1", NS, "scaledobjects"
                )
    assert missing.value.status == 404


def test_exec_speaks_the_channel_protocol(kube: tuple[FakeApiServer, client.ApiClient]) -> None:
    api, api_client = kube
    core = client.CoreV1Api(api_client)
    name = sorted(pod_names(core, "app.kubernetes.io/name=orders"))[0]
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        name,
        NS,
        container="app",
        command=["true"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    ws.run_forever(timeout=5)
    assert ws.returncode == 0
    assert api.cluster.execs == [(name, "app", ["true"])]
    with pytest.raises(ApiException, match="400"):
        stream(
            core.connect_get_namespaced_pod_exec,
            name,
            NS,
            container="nope",
            command=["true"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
        )
