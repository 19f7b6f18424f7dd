"""``make k8s-up``: the platform on the cluster of the current kubectl context, working the
first time or saying in one line what is missing.

    python -m infra.k8s.deploy up [--overlay dev|prod] [--components a,b] [--registry R]

``up``, in order (each step says what it does; a failure is one line, exit 1):

1. render: ``kubectl kustomize`` of a small kustomization under ``$MESH_HOME/k8s/<overlay>``
   that takes the overlay, adds ``--components`` and, with ``--registry``, renames the
   project's images through kustomize ``images`` (``mesh-demo/<name>`` -> ``<registry>/<name>``);
2. prerequisites, read from the cluster: the context answers; enough schedulable nodes for the
   pods with required anti-affinity (prod: Kafka and Consul one per node, so 3); a default
   StorageClass (the StatefulSets' volume claims); metrics-server when HPAs are rendered (the
   resource metrics API; ``--no-autoscale`` deploys without it); KEDA when ScaledObjects are;
3. images: the project's images the render names are built when this Docker engine has none
   (``infra/docker/build-images.sh``), then made available to the cluster: ``kind load
   docker-image``, ``minikube image load``, ``k3d image import``, or ``docker push`` to the
   registry; Docker Desktop shares the engine's images;
4. autoscalers and Jobs left by an earlier ``up`` that this one replaces: a CPU HPA on a
   Deployment a ScaledObject now scales (KEDA's webhook refuses the ScaledObject while it
   exists), an HPA or ScaledObject no longer rendered, a finished or never-started Job (its
   pod template cannot change; the topic Job is idempotent);
5. ``kubectl apply`` of exactly the rendered objects, then waiting, with a line for every
   change, until the StatefulSets are ready, the topic Job is complete and every Deployment
   is available; a pod that cannot get there (image pull, crash loop, unschedulable) ends the
   wait at once, naming the pod and why.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.k8s.client import Kube, not_found
from infra.runtime.base import RuntimeFailure

REPO = Path(__file__).resolve().parents[2]
PROJECT = "mesh-demo"
PART_OF = "app.kubernetes.io/part-of=mesh-demo"
NAMESPACE = "mesh"
HOPELESS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
    "RunContainerError",
}
Obj = dict[str, Any]


class DeployError(Exception):
    """One line for the user: what is missing and what to do."""


def say(line: str) -> None:
    print(f"k8s-up: {line}", flush=True)


def run(argv: list[str], what: str, timeout: float = 600, **kw: Any) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise DeployError(f"{argv[0]} is not installed ({what})") from None
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what}: {argv[0]} did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise DeployError(f"{what} failed: {last[-1] if last else f'exit {done.returncode}'}")
    return done.stdout


# -- 1. render ------------------------------------------------------------------------------
def kustomization(overlay: str, components: list[str], registry: str | None, home: Path) -> Path:
    """The kustomization ``up`` renders: the overlay, the components, the image names."""
    overlay_dir = REPO / "k8s" / "overlays" / overlay
    if not (overlay_dir / "kustomization.yaml").is_file():
        raise DeployError(f"no overlay {overlay!r} (k8s/overlays has {_listing('overlays')})")
    target = home / "k8s" / overlay
    target.mkdir(parents=True, exist_ok=True)
    doc: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay_dir, target)],
    }
    if components:
        for name in components:
            if not (REPO / "k8s" / "components" / name).is_dir():
                raise DeployError(
                    f"no component {name!r} (k8s/components has {_listing('components')})"
                )
        doc["components"] = [
            os.path.relpath(REPO / "k8s" / "components" / c, target) for c in components
        ]
    if registry:
        doc["images"] = [
            {"name": f"{PROJECT}/{name}", "newName": f"{registry.rstrip('/')}/{name}"}
            for name in project_image_names()
        ]
    (target / "kustomization.yaml").write_text(
        "# Written by make k8s-up (infra/k8s/deploy.py); rewritten at every run.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return target


def _listing(kind: str) -> str:
    return ", ".join(sorted(p.name for p in (REPO / "k8s" / kind).iterdir() if p.is_dir()))


def project_image_names() -> list[str]:
    """The images infra/docker/build-images.sh builds for the platform."""
    return ["orders", "inventory", "payments", "notifications", "gateway", "locust"]


def render(directory: Path, kubectl: str) -> list[Obj]:
    text = run([kubectl, "kustomize", str(directory)], "kubectl kustomize")
    return [d for d in yaml.safe_load_all(text) if d]


def images_of(objs: list[Obj]) -> list[str]:
    found: list[str] = []
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = o["spec"]["template"]["spec"]
        for c in [*(spec.get("initContainers") or []), *spec["containers"]]:
            if c["image"] not in found:
                found.append(c["image"])
    return found


# -- 2. prerequisites -----------------------------------------------------------------------
def nodes_needed(objs: list[Obj]) -> tuple[int, list[str]]:
    """Schedulable nodes the render needs: a workload with required pod anti-affinity on the
    hostname puts each of its replicas on a node of its own."""
    need, who = 1, []
    for o in objs:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        anti = (o["spec"]["template"]["spec"].get("affinity") or {}).get("podAntiAffinity") or {}
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
        if any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms):
            replicas = int(o["spec"].get("replicas", 1))
            if replicas > 1:
                who.append(o["metadata"]["name"])
                need = max(need, replicas)
    return need, who


def schedulable(node: Any) -> bool:
    if node.spec.unschedulable:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    blocked = any(t.effect in ("NoSchedule", "NoExecute") for t in node.spec.taints or [])
    return ready and not blocked


@dataclass
class Cluster:
    """What ``up`` learns about the cluster of the context."""

    context: str
    nodes: list[Any]
    flavour: str  # kind, minikube, k3d, docker-desktop, other
    name: str  # the kind/k3d cluster or minikube profile
    problems: list[str] = field(default_factory=list)


def flavour_of(context: str, nodes: list[Any]) -> tuple[str, str]:
    """Which tool made the cluster: the context's name as the tools write it (kind-NAME,
    k3d-NAME, minikube's profile, docker-desktop) and the nodes' provider IDs and labels."""
    provider = {(n.spec.provider_id or "").split(":", 1)[0] for n in nodes}
    labels = [n.metadata.labels or {} for n in nodes]
    if context.startswith("kind-") or "kind" in provider:
        return "kind", context.removeprefix("kind-")
    if context.startswith("k3d-") or "k3s" in provider:
        return "k3d", context.removeprefix("k3d-")
    if any("minikube.k8s.io/name" in lbl for lbl in labels):
        return "minikube", next(
            lbl["minikube.k8s.io/name"] for lbl in labels if "minikube.k8s.io/name" in lbl
        )
    if context in ("docker-desktop", "docker-for-desktop"):
        return "docker-desktop", context
    return "other", context


def check_prerequisites(kube: Kube, context: str, objs: list[Obj], *, autoscale: bool) -> Cluster:
    """Everything the render needs from the cluster, or the first thing missing (one line)."""
    try:
        nodes = list(kube.core.list_node(_request_timeout=10).items)
    except Exception as exc:
        raise DeployError(
            f"the kubectl context {context!r} does not answer ({_short(exc)}): start the "
            "cluster (kind create cluster, k8s/README.md) or choose another "
            "(kubectl config use-context)"
        ) from None
    flavour, name = flavour_of(context, nodes)
    cluster = Cluster(context, nodes, flavour, name)
    need, who = nodes_needed(objs)
    usable = [n.metadata.name for n in nodes if schedulable(n)]
    if len(usable) < need:
        raise DeployError(
            f"this overlay needs {need} schedulable nodes ({', '.join(who)} run one pod per "
            f"node: required pod anti-affinity), the cluster has {len(usable)}"
            f"{' (' + ', '.join(usable) + ')' if usable else ''}: use a {need}-node cluster "
            "(k8s/README.md) or K8S_OVERLAY=dev"
        )
    classes = kube.call("list storageclasses", kube.storage.list_storage_class).items
    default = [
        c.metadata.name
        for c in classes
        if (c.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
    ]
    if (
        any(o["kind"] == "StatefulSet" and o["spec"].get("volumeClaimTemplates") for o in objs)
        and not default
    ):
        raise DeployError(
            "the cluster has no default StorageClass: the StatefulSets' volume claims would "
            "stay Pending (kind, minikube and k3d bring one; set one with kubectl patch "
            'storageclass NAME -p \'{"metadata": {"annotations": '
            '{"storageclass.kubernetes.io/is-default-class": "true"}}}\')'
        )
    if any(o["kind"] == "HorizontalPodAutoscaler" for o in objs) and autoscale:
        if not metrics_api_available(kube):
            hint = {
                "minikube": f"minikube addons enable metrics-server -p {name}",
                "kind": "install it as k8s/README.md 'On kind' shows",
            }.get(flavour, "install metrics-server (k8s/README.md)")
            raise DeployError(
                "no metrics-server (the resource metrics API v1beta1.metrics.k8s.io is not "
                f"available): the HPAs could not scale: {hint}, or AUTOSCALE=0 to deploy "
                "at the HPAs' minimum"
            )
    if any(o["kind"] == "ScaledObject" for o in objs) and not keda_installed(kube):
        raise DeployError(
            "the keda component needs KEDA (no CRD scaledobjects.keda.sh): helm install keda "
            "kedacore/keda -n keda --create-namespace, or drop the component"
        )
    return cluster


def metrics_api_available(kube: Kube) -> bool:
    try:
        service = kube.call(
            "apiservice v1beta1.metrics.k8s.io",
            kube.registration.read_api_service,
            "v1beta1.metrics.k8s.io",
        )
    except RuntimeFailure as exc:
        if not_found(exc):
            return False
        raise
    return any(
        c.type == "Available" and c.status == "True" for c in service.status.conditions or []
    )


def keda_installed(kube: Kube) -> bool:
    try:
        kube.call(
            "crd scaledobjects.keda.sh",
            kube.extensions.read_custom_resource_definition,
            "scaledobjects.keda.sh",
        )
    except RuntimeFailure as exc:
        if not_found(exc):
            return False
        raise
    return True


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


# -- 3. images ------------------------------------------------------------------------------
def local_image(image: str, registry: str | None) -> str:
    """The name this Docker engine builds an image under (the render may name the registry)."""
    if registry and image.startswith(registry.rstrip("/") + "/"):
        return f"{PROJECT}/{image.removeprefix(registry.rstrip('/') + '/')}"
    return image


def project_images(objs: list[Obj], registry: str | None) -> list[tuple[str, str]]:
    """(local name, name in the render) of every project image the render uses."""
    out = []
    for image in images_of(objs):
        local = local_image(image, registry)
        if local.startswith(f"{PROJECT}/"):
            out.append((local, image))
    return out


def docker_has(image: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return done.returncode == 0


def build_missing(images: list[tuple[str, str]], base: str) -> None:
    missing = [local for local, _ in images if not docker_has(local)]
    if not missing:
        say(f"images: {len(images)} project images already built")
        return
    names = [m.split("/", 1)[1].split(":")[0] for m in missing]
    say(f"images: building {', '.join(names)} (infra/docker/build-images.sh --base {base})")
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(REPO / "infra/docker/build-images.sh"), "--base", base, *names], check=False
    )
    if build.returncode != 0:
        raise DeployError("building the images failed (its output is above)")
    say(f"images: built in {time.monotonic() - started:.0f}s")


def load_commands(
    cluster: Cluster, images: list[tuple[str, str]], registry: str | None
) -> list[list[str]]:
    """How the cluster gets the images: its tool's own loader, or a registry."""
    if registry:
        cmds = []
        for local, remote in images:
            cmds += [["docker", "tag", local, remote], ["docker", "push", remote]]
        return cmds
    names = [local for local, _ in images]
    if cluster.flavour == "kind":
        return [["kind", "load", "docker-image", "--name", cluster.name, *names]]
    if cluster.flavour == "k3d":
        return [["k3d", "image", "import", "--cluster", cluster.name, *names]]
    if cluster.flavour == "minikube":
        return [["minikube", "image", "load", "--profile", cluster.name, name] for name in names]
    if cluster.flavour == "docker-desktop":
        return []  # its kubelet uses this Docker engine's images
    raise DeployError(
        f"cannot tell how cluster {cluster.context!r} gets local images (not kind, minikube, "
        "k3d or Docker Desktop): set REGISTRY=host/prefix to push them there"
    )


def make_available(cluster: Cluster, images: list[tuple[str, str]], registry: str | None) -> None:
    for argv in load_commands(cluster, images, registry):
        say(f"images: {' '.join(argv[:4])} ...")
        run(argv, " ".join(argv[:3]), timeout=900)
    if cluster.flavour == "docker-desktop" and not registry:
        say("images: Docker Desktop's cluster uses this engine's images")


# -- 4. what an earlier up left ---------------------------------------------------------------
def stale(kube: Kube, objs: list[Obj]) -> list[tuple[str, str]]:
    """(kind, name) of our autoscalers and Jobs in the namespace that must go before apply."""
    rendered = {(o["kind"], o["metadata"]["name"]) for o in objs}
    keda_targets = {
        o["spec"]["scaleTargetRef"]["name"] for o in objs if o["kind"] == "ScaledObject"
    }
    out: list[tuple[str, str]] = []
    hpas = kube.call(
        "list horizontalpodautoscalers",
        kube.autoscaling.list_namespaced_horizontal_pod_autoscaler,
        NAMESPACE,
        label_selector=PART_OF,
    ).items
    for hpa in hpas:
        name = hpa.metadata.name
        if ("HorizontalPodAutoscaler", name) not in rendered or (
            hpa.spec.scale_target_ref.name in keda_targets
        ):
            out.append(("HorizontalPodAutoscaler", name))
    try:
        scaled = kube.call(
            "list scaledobjects",
            kube.custom.list_namespaced_custom_object,
            "keda.sh",
            "v1alpha1",
            NAMESPACE,
            "scaledobjects",
            label_selector=PART_OF,
        )
        for so in scaled.get("items") or []:
            if ("ScaledObject", so["metadata"]["name"]) not in rendered:
                out.append(("ScaledObject", so["metadata"]["name"]))
    except RuntimeFailure as exc:
        if not not_found(exc):
            raise
    jobs = kube.call(
        "list jobs", kube.batch.list_namespaced_job, NAMESPACE, label_selector=PART_OF
    ).items
    for job in jobs:
        done = (job.status.succeeded or 0) > 0
        waiting = bool(job.spec.suspend) and not (job.status.active or 0)
        if done or waiting:
            out.append(("Job", job.metadata.name))
    return out


def remove(kube: Kube, items: list[tuple[str, str]]) -> None:
    for kind, name in items:
        if kind == "HorizontalPodAutoscaler":
            fn: Any = kube.autoscaling.delete_namespaced_horizontal_pod_autoscaler
            args: tuple[Any, ...] = (name, NAMESPACE)
        elif kind == "ScaledObject":
            fn = kube.custom.delete_namespaced_custom_object
            args = ("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", name)
        else:
            fn = kube.batch.delete_namespaced_job
            args = (name, NAMESPACE)
        try:
            kube.call(f"delete {kind.lower()} {name}", fn, *args, propagation_policy="Background")
        except RuntimeFailure as exc:
            if not not_found(exc):
                raise
        say(f"removed {kind} {name} (replaced by this apply)")


# -- 5. apply and wait ----------------------------------------------------------------------
def pod_trouble(pods: list[Any]) -> str | None:
    """The first pod that cannot get ready by waiting, and why."""
    for pod in pods:
        if pod.metadata.deletion_timestamp is not None:
            continue
        for status in [
            *(pod.status.init_container_statuses or []),
            *(pod.status.container_statuses or []),
        ]:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in HOPELESS:
                detail = (waiting.message or "").strip().splitlines()
                return f"pod {pod.metadata.name}: {waiting.reason}" + (
                    f" ({detail[0][:200]})" if detail else ""
                )
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                why = (condition.message or "")[:240]
                return f"pod {pod.metadata.name} cannot be scheduled: {why}"
    return None


def readiness(kube: Kube) -> tuple[list[str], bool]:
    """One line per workload and whether everything is there."""
    lines, done = [], True
    for sts in kube.call(
        "list statefulsets", kube.apps.list_namespaced_stateful_set, NAMESPACE
    ).items:
        want, ready = sts.spec.replicas or 0, sts.status.ready_replicas or 0
        lines.append(f"statefulset/{sts.metadata.name} {ready}/{want}")
        done &= ready >= want
    for job in kube.call("list jobs", kube.batch.list_namespaced_job, NAMESPACE).items:
        if job.spec.suspend:
            continue
        ok = (job.status.succeeded or 0) > 0
        lines.append(f"job/{job.metadata.name} {'complete' if ok else 'running'}")
        done &= ok
    for dep in kube.call("list deployments", kube.apps.list_namespaced_deployment, NAMESPACE).items:
        want, ready = dep.spec.replicas or 0, dep.status.available_replicas or 0
        lines.append(f"deployment/{dep.metadata.name} {ready}/{want}")
        done &= ready >= want and (dep.status.observed_generation or 0) >= (
            dep.metadata.generation or 0
        )
    return lines, done


def wait_ready(kube: Kube, timeout: float, poll: float = 2.0) -> float:
    started = time.monotonic()
    said: set[str] = set()
    while True:
        lines, done = readiness(kube)
        for line in lines:
            if line not in said:
                say(f"{time.monotonic() - started:5.0f}s  {line}")
                said.add(line)
        if done and lines:
            return time.monotonic() - started
        pods = kube.call("list pods", kube.core.list_namespaced_pod, NAMESPACE).items
        trouble = pod_trouble(pods)
        if trouble:
            raise DeployError(f"{trouble}; kubectl -n {NAMESPACE} describe pod for the rest")
        if time.monotonic() - started > timeout:
            waiting = [line for line in lines if not line.endswith(("complete",))]
            raise DeployError(f"not ready after {timeout:.0f}s: {', '.join(waiting)}")
        time.sleep(poll)


def current_context(kubectl: str) -> str:
    try:
        return run([kubectl, "config", "current-context"], "kubectl config current-context").strip()
    except DeployError as exc:
        raise DeployError(
            f"no kubectl context ({exc}): create a cluster (kind create cluster --name mesh, "
            "k8s/README.md) or choose one (kubectl config use-context NAME)"
        ) from None


def up(args: argparse.Namespace) -> float:
    kubectl = shutil.which(args.kubectl) or args.kubectl
    if not shutil.which(kubectl):
        raise DeployError(f"{args.kubectl} is not on PATH (kubectl 1.30 or newer, k8s/README.md)")
    home = Path(os.environ.get("MESH_HOME", REPO / ".mesh"))
    components = [c for c in (args.components or "").replace(",", " ").split() if c]
    directory = kustomization(args.overlay, components, args.registry, home)
    objs = render(directory, kubectl)
    say(
        f"rendered {len(objs)} objects from k8s/overlays/{args.overlay}"
        + (f" + {', '.join(components)}" if components else "")
    )
    context = current_context(kubectl)
    kube = Kube()
    cluster = check_prerequisites(kube, context, objs, autoscale=args.autoscale)
    say(f"cluster {context!r} ({cluster.flavour}): {len(cluster.nodes)} node(s), prerequisites met")
    images = project_images(objs, args.registry)
    build_missing(images, args.base)
    make_available(cluster, images, args.registry)
    leftovers = stale(kube, objs)
    remove(kube, leftovers)
    rendered = home / "k8s" / args.overlay / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    say(f"kubectl apply -f {os.path.relpath(rendered, Path.cwd())}")
    out = run([kubectl, "apply", "-f", str(rendered)], "kubectl apply", timeout=300)
    changed = [line for line in out.splitlines() if not line.endswith("unchanged")]
    say(f"applied: {len(changed)} changed, {len(out.splitlines()) - len(changed)} unchanged")
    took = wait_ready(kube, args.timeout)
    port = next(
        (
            p["port"]
            for o in objs
            if o["kind"] == "Service" and o["metadata"]["name"] == "gateway"
            for p in o["spec"]["ports"]
        ),
        8080,
    )
    say(f"ready after {took:.0f}s of waiting")
    forward = f"kubectl -n {NAMESPACE} port-forward svc/gateway 8080:{port}"
    print(f"gateway: {forward}, then http://127.0.0.1:8080 (UIs: k8s/README.md)")
    secret = f"kubectl -n {NAMESPACE} get secret mesh-secrets -o jsonpath='{{.data.api-keys}}'"
    print(f"API key: {secret} | base64 -d")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.k8s.deploy", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="deploy to the current kubectl context and wait until ready")
    p.add_argument("--overlay", default=os.environ.get("K8S_OVERLAY") or "dev")
    p.add_argument("--components", default=os.environ.get("K8S_COMPONENTS", ""))
    p.add_argument("--registry", default=os.environ.get("REGISTRY") or None)
    p.add_argument(
        "--base",
        default=os.environ.get("BASE_IMAGE", "python:3.12-slim"),
        help="base of the image builds (local: the debootstrap base)",
    )
    p.add_argument(
        "--no-autoscale",
        dest="autoscale",
        action="store_false",
        default=os.environ.get("AUTOSCALE", "1") != "0",
    )
    p.add_argument("--timeout", type=float, default=float(os.environ.get("K8S_TIMEOUT") or 900))
    p.add_argument("--kubectl", default=os.environ.get("KUBECTL") or "kubectl")
    args = parser.parse_args(argv)
    try:
        up(args)
    except (DeployError, RuntimeFailure) as exc:
        print(f"k8s-up: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
