"""make k8s-up (infra/k8s/deploy.py): the render it applies (real kubectl kustomize), the
prerequisites it reads from the cluster (the fake API server), how it gives the images to
kind, minikube, k3d or a registry (those tools cannot run here: their command lines are what
is checked), what it removes before applying, and a wait that ends at once on a hopeless pod."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube_api import FakeApiServer, FakeCluster, job, node
from kubernetes import client

from infra.k8s import deploy
from infra.k8s.client import Kube
from infra.k8s.deploy import Cluster, DeployError

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture
def secrets(tmp_path: Path) -> Iterator[None]:
    """secrets.env in both overlays (git-ignored; make k8s-up writes them), put back after."""
    made = []
    for overlay in ("dev", "prod"):
        target = deploy.REPO / "k8s" / "overlays" / overlay / "secrets.env"
        if not target.exists():
            example = target.with_name("secrets.env.example").read_text()
            target.write_text(example.replace("change-me", "test-value-0123456789"))
            made.append(target)
    yield
    for target in made:
        target.unlink()


def rendered(
    tmp_path: Path, overlay: str, components: list[str], registry: str | None = None
) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    return deploy.render(deploy.kustomization(overlay, components, registry, tmp_path), KUBECTL)


def kube_for(api: FakeApiServer) -> Kube:
    return Kube(client.ApiClient(client.Configuration(host=api.url)))


@needs_kubectl
def test_the_registry_renames_the_project_images_only(tmp_path: Path, secrets: None) -> None:
    objs = rendered(tmp_path, "dev", ["loadtest"], "registry.example:5000/mesh")
    images = deploy.images_of(objs)
    ours = [i for i in images if "/mesh/" in i]
    assert "registry.example:5000/mesh/orders:0.1.0" in ours
    assert "registry.example:5000/mesh/locust:0.1.0" in ours
    assert not [i for i in images if i.startswith("mesh-demo/")]
    assert "apache/kafka:3.9.1" in images
    pairs = deploy.project_images(objs, "registry.example:5000/mesh")
    assert ("mesh-demo/gateway:0.1.0", "registry.example:5000/mesh/gateway:0.1.0") in pairs


@needs_kubectl
def test_prod_needs_three_nodes_and_says_so_on_a_one_node_cluster(
    tmp_path: Path, secrets: None
) -> None:
    prod = rendered(tmp_path, "prod", [])
    assert deploy.nodes_needed(prod) == (3, ["consul", "kafka"])
    assert deploy.nodes_needed(rendered(tmp_path, "dev", []))[0] == 1
    with FakeApiServer(FakeCluster()) as api:
        with pytest.raises(DeployError) as refused:
            deploy.check_prerequisites(kube_for(api), "kind-kind", prod, autoscale=True)
    assert str(refused.value) == (
        "this overlay needs 3 schedulable nodes (consul, kafka run one pod per node: required "
        "pod anti-affinity), the cluster has 1 (kind-control-plane): use a 3-node cluster "
        "(k8s/README.md) or K8S_OVERLAY=dev"
    )
    taint = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    three = [node("cp", taints=taint), node("w1"), node("w2"), node("w3")]
    with FakeApiServer(FakeCluster(nodes=three)) as api:
        found = deploy.check_prerequisites(kube_for(api), "kind-kind", prod, autoscale=True)
    assert (found.flavour, found.name) == ("kind", "kind")


@needs_kubectl
def test_missing_metrics_server_storage_class_and_keda_are_one_line_each(
    tmp_path: Path, secrets: None
) -> None:
    dev = rendered(tmp_path, "dev", [])
    with FakeApiServer(FakeCluster(metrics_server=False)) as api:
        with pytest.raises(DeployError, match=r"^no metrics-server .*'On kind'.*AUTOSCALE=0"):
            deploy.check_prerequisites(kube_for(api), "kind-kind", dev, autoscale=True)
        deploy.check_prerequisites(kube_for(api), "kind-kind", dev, autoscale=False)
    with FakeApiServer(FakeCluster(storage_class=False)) as api:
        with pytest.raises(DeployError, match="no default StorageClass"):
            deploy.check_prerequisites(kube_for(api), "kind-kind", dev, autoscale=True)
    keda = rendered(tmp_path, "dev", ["keda"])
    with FakeApiServer(FakeCluster()) as api:
        with pytest.raises(DeployError, match=r"needs KEDA .*scaledobjects\.keda\.sh"):
            deploy.check_prerequisites(kube_for(api), "kind-kind", keda, autoscale=True)
    with FakeApiServer(FakeCluster(keda=True)) as api:
        deploy.check_prerequisites(kube_for(api), "kind-kind", keda, autoscale=True)


def test_an_unreachable_context_is_one_line() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    kube = Kube(client.ApiClient(configuration))
    with pytest.raises(DeployError, match=r"^the kubectl context 'kind-kind' does not answer"):
        deploy.check_prerequisites(kube, "kind-kind", [], autoscale=True)


@pytest.mark.parametrize(
    ("context", "labels", "provider", "flavour", "name"),
    [
        ("kind-mesh", {}, "kind://docker/mesh/mesh-control-plane", "kind", "mesh"),
        ("k3d-mesh", {}, "k3s://k3d-mesh-server-0", "k3d", "mesh"),
        ("minikube", {"minikube.k8s.io/name": "minikube"}, "", "minikube", "minikube"),
        ("docker-desktop", {}, "", "docker-desktop", "docker-desktop"),
        ("gke_p_z_c", {}, "gce://p/z/n", "other", "gke_p_z_c"),
    ],
)
def test_each_local_cluster_gets_the_images_its_own_way(
    context: str, labels: dict[str, str], provider: str, flavour: str, name: str
) -> None:
    n = client.V1Node(
        metadata=client.V1ObjectMeta(name="n", labels=labels),
        spec=client.V1NodeSpec(provider_id=provider),
    )
    assert deploy.flavour_of(context, [n]) == (flavour, name)
    images = [("mesh-demo/orders:0.1.0", "mesh-demo/orders:0.1.0")]
    cluster = Cluster(context, [n], flavour, name)
    expected = {
        "kind": [["kind", "load", "docker-image", "--name", "mesh", "mesh-demo/orders:0.1.0"]],
        "k3d": [["k3d", "image", "import", "--cluster", "mesh", "mesh-demo/orders:0.1.0"]],
        "minikube": [
            ["minikube", "image", "load", "--profile", "minikube", "mesh-demo/orders:0.1.0"]
        ],
        "docker-desktop": [],
    }
    if flavour in expected:
        assert deploy.load_commands(cluster, images, None) == expected[flavour]
    else:
        with pytest.raises(DeployError, match="set REGISTRY=host/prefix"):
            deploy.load_commands(cluster, images, None)
    pushed = deploy.load_commands(
        cluster, [("mesh-demo/orders:0.1.0", "r.example/m/orders:0.1.0")], "r.example/m"
    )
    assert pushed == [
        ["docker", "tag", "mesh-demo/orders:0.1.0", "r.example/m/orders:0.1.0"],
        ["docker", "push", "r.example/m/orders:0.1.0"],
    ]


@needs_kubectl
def test_keda_over_cpu_hpas_removes_them_first(tmp_path: Path, secrets: None) -> None:
    """Enabling keda over an install with CPU HPAs: KEDA's webhook refuses each ScaledObject
    while the HPA it would replace exists (the fake answers as KEDA does); up removes them."""
    objs = rendered(tmp_path, "dev", ["keda"])
    with FakeApiServer(FakeCluster(keda=True)) as api:
        # An install without keda first: its CPU HPAs are in the cluster.
        cluster = api.cluster
        cluster.scaled_objects.clear()
        cluster.hpas.pop("keda-hpa-orders", None)
        cluster.hpas.pop("keda-hpa-payments", None)
        for name in ("orders", "payments"):
            cluster._add_hpa(
                next(
                    d
                    for d in deploy_docs("orders" if name == "orders" else "payments")
                    if d["kind"] == "HorizontalPodAutoscaler"
                )
            )
        cluster.jobs["kafka-topics"] = job("kafka-topics", succeeded=1)
        cluster.jobs["locust-drill"] = job("locust-drill", suspend=True)
        cluster.jobs["busy"] = job("busy", active=1)
        kube = kube_for(api)
        so = next(
            o for o in objs if o["kind"] == "ScaledObject" and o["metadata"]["name"] == "orders"
        )
        with pytest.raises(
            client.exceptions.ApiException, match="already managed by the hpa 'orders'"
        ):
            kube.custom.create_namespaced_custom_object(
                "keda.sh", "v1alpha1", "mesh", "scaledobjects", so
            )
        items = deploy.stale(kube, objs)
        assert ("HorizontalPodAutoscaler", "orders") in items
        assert ("HorizontalPodAutoscaler", "payments") in items
        assert ("HorizontalPodAutoscaler", "gateway") not in items  # still rendered, not KEDA's
        assert ("Job", "kafka-topics") in items and ("Job", "locust-drill") in items
        assert ("Job", "busy") not in items
        deploy.remove(kube, items)
        kube.custom.create_namespaced_custom_object(
            "keda.sh", "v1alpha1", "mesh", "scaledobjects", so
        )
        assert "keda-hpa-orders" in cluster.hpas and "orders" not in cluster.hpas


def deploy_docs(service: str) -> list[dict[str, Any]]:
    from fake_kube_api import ROOT, manifests

    return manifests(ROOT / f"k8s/base/apps/{service}.yaml")


def test_the_wait_ends_at_once_on_a_crash_looping_pod() -> None:
    with FakeApiServer(FakeCluster()) as api:
        kube = kube_for(api)
        assert deploy.wait_ready(kube, timeout=10, poll=0.01) >= 0  # all there already
        api.cluster.crashing.add("orders")
        rs = next(
            r
            for r in api.cluster.replicasets.values()
            if r["metadata"]["name"].startswith("orders-")
        )
        api.cluster._rs_set(rs, 3, 0)
        api.cluster._resync()
        with pytest.raises(DeployError, match=r"^pod orders-\S+: CrashLoopBackOff \(back-off"):
            deploy.wait_ready(kube, timeout=10, poll=0.01)
