"""The namespace as the k8s runtime and its rollout target see it: every API call they make.

The module graph runs one way: ``runtime`` -> ``driver`` -> ``target`` -> ``cluster`` ->
``client``/``objects``. The runtime answers meshctl; the rollout target (blue-green, canary)
and this module know nothing of it.

Autoscalers come in two kinds, and :meth:`Cluster.autoscalers` tells them apart:

- a plain HorizontalPodAutoscaler (``k8s/base/apps``): its ``minReplicas`` is the floor that
  ``meshctl scale`` raises;
- KEDA's (the ``keda`` component): KEDA creates the HPA ``keda-hpa-<name>`` from a ScaledObject
  and owns it (an owner reference to the ScaledObject). KEDA writes that HPA back from the
  ScaledObject at every reconcile, so the floor is raised on the ScaledObject
  (``minReplicaCount``), with a JSON merge patch: a custom resource takes no strategic merge.

Pausing autoscaling (``autoscale(False)``) pins a plain HPA's minimum and maximum to the count
it runs and keeps the old pair in an annotation; a ScaledObject gets KEDA's own pause,
``autoscaling.keda.sh/paused-replicas``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes.stream import stream

from infra.k8s.client import Kube, not_found
from infra.k8s.objects import (
    APPS,
    COMPONENT,
    INFRA,
    NAME,
    ROLLOUT,
    VERSION,
    VERSION_ENV,
    deployment_version,
    resources_patch,
    selector,
    version_container,
)
from infra.runtime.base import RuntimeFailure

KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS = "keda.sh", "v1alpha1", "scaledobjects"
KEDA_PAUSED = "autoscaling.keda.sh/paused-replicas"
PAUSED = "mesh.demo/autoscale-paused"  # on an HPA autoscale(False) pinned: {"min": a, "max": b}
KEDA_DEFAULT_MAX = 100  # maxReplicaCount when a ScaledObject does not say

# Run in the pod's app container by kill_replica: SIGKILL every process of this container but
# the shell itself. The pods share their process namespace (shareProcessNamespace: true), so
# the app is not PID 1 there (the pause process is); PID 1 of a namespace ignores a SIGKILL
# sent from inside it. The container's processes are those in the shell's own cgroup.
KILL_CONTAINER = r"""
me=$(cat /proc/$$/cgroup); n=0
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] || [ "$p" = "$$" ] && continue
  [ "$(cat "$d/cgroup" 2>/dev/null)" = "$me" ] || continue
  kill -KILL "$p" 2>/dev/null && n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no process of this container to kill" >&2; exit 1; }
echo "SIGKILL sent to $n process(es)"
"""


@dataclass(frozen=True)
class Autoscaler:
    """What scales one Deployment: a plain HPA, or a ScaledObject with the HPA KEDA made for
    it (none while KEDA's pause is on)."""

    deployment: str
    hpa: Any  # the client's V2HorizontalPodAutoscaler; None for a paused ScaledObject
    scaled_object: dict[str, Any] | None  # custom objects come as plain JSON

    @property
    def keda(self) -> bool:
        return self.scaled_object is not None

    @property
    def name(self) -> str:
        if self.scaled_object is not None:
            return f"scaledobject {self.scaled_object['metadata']['name']}"
        return f"horizontalpodautoscaler {self.hpa.metadata.name}"

    @property
    def paused(self) -> bool:
        if self.scaled_object is not None:
            return KEDA_PAUSED in (self.scaled_object["metadata"].get("annotations") or {})
        return PAUSED in (self.hpa.metadata.annotations or {})


def keda_owner(hpa: Any) -> str | None:
    """The ScaledObject that owns an HPA (KEDA's ``keda-hpa-<name>``), else None."""
    for ref in hpa.metadata.owner_references or []:
        if ref.kind == "ScaledObject" and ref.api_version.startswith(f"{KEDA_GROUP}/"):
            return str(ref.name)
    return None


class Cluster:
    def __init__(self, namespace: str, api_client: Any = None, poll_interval: float = 0.5) -> None:
        self.namespace = namespace
        self.poll_interval = poll_interval  # between two reads when waiting on the cluster
        self._api_client = api_client
        self._kube: Kube | None = None
        self._gateway: str | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:  # lazily: a kubeconfig is only needed once the API is used
            self._kube = Kube(self._api_client)
        return self._kube

    # -- Deployments, ReplicaSets, pods ----------------------------------------------------------
    def deployments(self, service: str | None = None) -> list[Any]:
        label_selector = f"{APPS},{NAME}={service}" if service else f"{APPS},{NAME}"
        k = self.kube
        listed = k.call(
            "list deployments",
            k.apps.list_namespaced_deployment,
            self.namespace,
            label_selector=label_selector,
        )
        return list(listed.items)

    def deployment(self, name: str) -> Any:
        k = self.kube
        return k.call(f"deployment {name}", k.apps.read_namespaced_deployment, name, self.namespace)

    def deployment_or_none(self, name: str) -> Any:
        try:
            return self.deployment(name)
        except RuntimeFailure as exc:
            if not_found(exc):
                return None
            raise

    def deployment_version(self, name: str) -> str:
        return deployment_version(self.deployment(name))

    def replica_sets(self, service: str | None = None) -> list[Any]:
        label_selector = f"{APPS},{NAME}={service}" if service else f"{APPS},{NAME}"
        k = self.kube
        listed = k.call(
            "list replicasets",
            k.apps.list_namespaced_replica_set,
            self.namespace,
            label_selector=label_selector,
        )
        return list(listed.items)

    def pods(self, labels: dict[str, str]) -> list[Any]:
        k = self.kube
        listed = k.call(
            "list pods",
            k.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector(dict(labels)),
        )
        return list(listed.items)

    def pod(self, name: str) -> Any:
        k = self.kube
        return k.call(f"pod {name}", k.core.read_namespaced_pod, name, self.namespace)

    def gateway_name(self) -> str:
        """The gateway's service name: the app Deployment labelled component=gateway."""
        if self._gateway is None:
            k = self.kube
            listed = k.call(
                "list deployments",
                k.apps.list_namespaced_deployment,
                self.namespace,
                label_selector=f"{APPS},{COMPONENT}=gateway",
            )
            if not listed.items:
                raise RuntimeFailure(f"no gateway Deployment in namespace {self.namespace}")
            self._gateway = str(listed.items[0].metadata.labels[NAME])
        return self._gateway

    def serialize(self, obj: Any) -> dict[str, Any]:
        """An API object as its JSON document (camelCase), to copy or send back."""
        document: dict[str, Any] = self.kube.api_client.sanitize_for_serialization(obj)
        return document

    def create_deployment(self, body: dict[str, Any]) -> None:
        k = self.kube
        name = body["metadata"]["name"]
        k.call(
            f"create deployment {name}",
            k.apps.create_namespaced_deployment,
            self.namespace,
            body,
        )

    def replace_deployment(self, body: dict[str, Any]) -> None:
        """PUT (with the resourceVersion read): a conflicting writer makes it fail, not merge."""
        k = self.kube
        name = body["metadata"]["name"]
        k.call(
            f"replace deployment {name}",
            k.apps.replace_namespaced_deployment,
            name,
            self.namespace,
            body,
        )

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        """A strategic merge patch (the client's choice for a dict body on a built-in kind)."""
        k = self.kube
        k.call(
            f"patch deployment {name}",
            k.apps.patch_namespaced_deployment,
            name,
            self.namespace,
            patch,
        )

    def set_version(self, deployment: Any, version: str, record: dict[str, Any] | None) -> None:
        """Patch (strategic merge) the version into the Deployment and its pod template; the
        rolling record goes into an annotation (``None`` removes it)."""
        try:
            container = version_container(deployment)
        except ValueError as exc:
            raise RuntimeFailure(str(exc)) from None
        service = (deployment.metadata.labels or {}).get(NAME) or deployment.metadata.name
        patch = {
            "metadata": {
                "labels": {VERSION: version},
                "annotations": {
                    ROLLOUT: json.dumps(record, sort_keys=True) if record is not None else None
                },
            },
            "spec": {
                "template": {
                    "metadata": {"annotations": {VERSION: version}},
                    "spec": {
                        "containers": [
                            {
                                "name": container,
                                "env": [{"name": VERSION_ENV, "value": version}],
                                "resources": resources_patch(service, version),
                            }
                        ]
                    },
                }
            },
        }
        self.patch_deployment(deployment.metadata.name, patch)

    def delete_versioned(self, name: str) -> None:
        """Delete a versioned Deployment (its pods terminate gracefully) and an HPA of it."""
        k = self.kube
        for what, fn, target in (
            (f"delete deployment {name}", k.apps.delete_namespaced_deployment, name),
            *(
                (
                    f"delete horizontalpodautoscaler {hpa.metadata.name}",
                    k.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
                    hpa.metadata.name,
                )
                for scaled, hpa in self.hpas().items()
                if scaled == name and keda_owner(hpa) is None
            ),
        ):
            try:
                k.call(what, fn, target, self.namespace, propagation_policy="Background")
            except RuntimeFailure as exc:
                if not not_found(exc):
                    raise

    # -- autoscalers -----------------------------------------------------------------------------
    def hpas(self) -> dict[str, Any]:
        """The HPAs by the name of the Deployment they scale (KEDA's included)."""
        k = self.kube
        listed = k.call(
            "list horizontalpodautoscalers",
            k.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            self.namespace,
        )
        return {
            h.spec.scale_target_ref.name: h
            for h in listed.items
            if h.spec.scale_target_ref.kind == "Deployment"
        }

    def scaled_objects(self) -> dict[str, dict[str, Any]]:
        """KEDA's ScaledObjects by the Deployment they scale; none where KEDA is not installed
        (the API server answers 404 for a resource it does not serve)."""
        k = self.kube
        try:
            listed = k.call(
                "list scaledobjects",
                k.custom.list_namespaced_custom_object,
                KEDA_GROUP,
                KEDA_VERSION,
                self.namespace,
                SCALED_OBJECTS,
            )
        except RuntimeFailure as exc:
            if not_found(exc):
                return {}
            raise
        out: dict[str, dict[str, Any]] = {}
        for so in listed.get("items") or []:
            ref = so.get("spec", {}).get("scaleTargetRef") or {}
            if ref.get("kind", "Deployment") == "Deployment" and ref.get("name"):
                out[ref["name"]] = so
        return out

    def autoscalers(self) -> dict[str, Autoscaler]:
        hpas, scaled = self.hpas(), self.scaled_objects()
        out: dict[str, Autoscaler] = {}
        for deployment in sorted({*hpas, *scaled}):
            hpa, so = hpas.get(deployment), scaled.get(deployment)
            if hpa is not None and so is not None and keda_owner(hpa) is None:
                # A CPU HPA left beside a ScaledObject: KEDA's webhook refuses that pair, and
                # two autoscalers on one Deployment fight. The plain one is what scales it.
                so = None
            out[deployment] = Autoscaler(deployment, hpa, so)
        return out

    def _patch_hpa(self, hpa: Any, patch: dict[str, Any]) -> None:
        k = self.kube
        k.call(
            f"horizontalpodautoscaler {hpa.metadata.name}",
            k.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            hpa.metadata.name,
            self.namespace,
            patch,
        )

    def _patch_scaled_object(self, so: dict[str, Any], patch: dict[str, Any]) -> None:
        k = self.kube
        name = so["metadata"]["name"]
        k.call(  # the client sends a dict body to a custom object as application/merge-patch+json
            f"patch scaledobject {name}",
            k.custom.patch_namespaced_custom_object,
            KEDA_GROUP,
            KEDA_VERSION,
            self.namespace,
            SCALED_OBJECTS,
            name,
            patch,
        )

    def raise_floor(self, scaler: Autoscaler, replicas: int) -> None:
        """Make the autoscaler keep at least ``replicas`` (exactly that many while paused)."""
        if scaler.scaled_object is not None:
            so = scaler.scaled_object
            top = so["spec"].get("maxReplicaCount", KEDA_DEFAULT_MAX)
            patch: dict[str, Any] = {
                "spec": {"minReplicaCount": replicas, "maxReplicaCount": max(replicas, top)}
            }
            if scaler.paused:
                patch["metadata"] = {"annotations": {KEDA_PAUSED: str(replicas)}}
            self._patch_scaled_object(so, patch)
            return
        hpa = scaler.hpa
        top = replicas if scaler.paused else max(replicas, hpa.spec.max_replicas)
        self._patch_hpa(hpa, {"spec": {"minReplicas": replicas, "maxReplicas": top}})

    def pause(self, scaler: Autoscaler, replicas: int) -> None:
        """Stop autoscaling at ``replicas`` (at least 1), remembering how to resume."""
        replicas = max(1, replicas)
        if scaler.paused:
            return
        if scaler.scaled_object is not None:
            patch = {"metadata": {"annotations": {KEDA_PAUSED: str(replicas)}}}
            self._patch_scaled_object(scaler.scaled_object, patch)
            return
        spec = scaler.hpa.spec
        before = json.dumps({"min": spec.min_replicas or 1, "max": spec.max_replicas})
        self._patch_hpa(
            scaler.hpa,
            {
                "metadata": {"annotations": {PAUSED: before}},
                "spec": {"minReplicas": replicas, "maxReplicas": replicas},
            },
        )

    def resume(self, scaler: Autoscaler) -> None:
        if not scaler.paused:
            return
        if scaler.scaled_object is not None:
            patch = {"metadata": {"annotations": {KEDA_PAUSED: None}}}
            self._patch_scaled_object(scaler.scaled_object, patch)
            return
        try:
            before = json.loads(scaler.hpa.metadata.annotations[PAUSED])
            low, high = int(before["min"]), int(before["max"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeFailure(
                f"{scaler.name}: annotation {PAUSED} is not {{'min': N, 'max': M}}; "
                "set minReplicas and maxReplicas by hand and remove it"
            ) from None
        self._patch_hpa(
            scaler.hpa,
            {
                "metadata": {"annotations": {PAUSED: None}},
                "spec": {"minReplicas": low, "maxReplicas": max(low, high)},
            },
        )

    # -- scaling ---------------------------------------------------------------------------------
    def scale_deployment(self, name: str, replicas: int, *, hpa_floor: bool) -> None:
        k = self.kube
        k.call(
            f"scale deployment {name}",
            k.apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )
        if not hpa_floor or replicas == 0:
            return
        scaler = self.autoscalers().get(name)
        if scaler is not None:
            self.raise_floor(scaler, replicas)

    # -- killing a container ---------------------------------------------------------------------
    def kill_container(self, pod: Any, container: str) -> str:
        """SIGKILL the processes of one container of a running pod, through ``pods/exec``:
        no SIGTERM, no preStop, no grace, as a crash (the kubelet restarts the container)."""
        name = pod.metadata.name
        if not pod.spec.share_process_namespace:
            raise RuntimeFailure(
                f"pod {name} does not share its process namespace (shareProcessNamespace), so "
                "its app is PID 1 of the container and ignores a SIGKILL sent from inside it"
            )
        k = self.kube
        try:
            ws = stream(
                k.core.connect_get_namespaced_pod_exec,
                name,
                self.namespace,
                container=container,
                command=["sh", "-c", KILL_CONTAINER],
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except Exception as exc:  # the websocket upgrade failed: the API server's answer
            raise RuntimeFailure(f"exec in pod {name}: {exc}") from None
        try:
            ws.run_forever(timeout=30)
            out, err = ws.read_stdout(timeout=0), ws.read_stderr(timeout=0)
            code = ws.returncode
        finally:
            ws.close()
        if code != 0:
            why = str(err or out).strip() or f"exit code {code}"
            raise RuntimeFailure(f"kill in pod {name}/{container} failed: {why}")
        return str(out).strip()

    # -- StatefulSets ----------------------------------------------------------------------------
    def statefulsets(self) -> list[Any]:
        k = self.kube
        listed = k.call(
            "list statefulsets",
            k.apps.list_namespaced_stateful_set,
            self.namespace,
            label_selector=INFRA,
        )
        return list(listed.items)

    def statefulset(self, name: str) -> Any:
        k = self.kube
        return k.call(
            f"statefulset {name}", k.apps.read_namespaced_stateful_set, name, self.namespace
        )

    def patch_statefulset(self, name: str, patch: dict[str, Any]) -> None:
        k = self.kube
        k.call(
            f"patch statefulset {name}",
            k.apps.patch_namespaced_stateful_set,
            name,
            self.namespace,
            patch,
        )

    def scale_statefulset(self, name: str, replicas: int) -> None:
        k = self.kube
        k.call(
            f"scale statefulset {name}",
            k.apps.patch_namespaced_stateful_set_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )
