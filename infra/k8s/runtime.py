"""``K8sRuntime``: the :class:`~infra.runtime.base.Runtime` of the ``k8s/`` manifests.

Everything is read from and written to the API server (Deployments, ReplicaSets, Pods, HPAs in
one namespace); nothing is kept in-process but the progress lines of a rollout being watched.

- ``scale`` patches the Deployment's scale subresource. When an HPA targets the Deployment it
  would undo that, so its ``minReplicas`` is raised to the count (``maxReplicas`` too if it is
  lower): the HPA keeps at least that many and may still scale up under load.
- A rolling rollout is the Deployment's own RollingUpdate: the container's ``SERVICE_VERSION``
  changes (one image serves every version, as ``k8s/components/canary`` shows), the version
  goes into the Deployment's label and the pod template's annotation (the selector, and so the
  template labels, cannot change), and the rollout record into an annotation. Its status is
  the ``kubectl rollout status`` rule; an abort rolls the template back to the old version.
- Blue-green and canary (versioned Deployments plus gateway weights) are not implemented here
  yet; they raise :class:`RuntimeFailure`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from infra.k8s.client import Kube
from infra.k8s.rollout_rule import deployment_rollout
from infra.runtime.base import Progress, Runtime, RuntimeFailure, quiet
from infra.runtime.models import (
    AutoscaleStatus,
    GatewayInfo,
    MetricReading,
    PlatformStatus,
    ReplicaInfo,
    RolloutEvent,
    RolloutSpec,
    RolloutStatus,
    ScaleDecision,
    ServiceStatus,
)

NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
VERSION = "mesh.demo/version"
ROLLOUT = "mesh.demo/rollout"  # the rollout record (JSON) on the Deployment
VERSION_ENV = "SERVICE_VERSION"
DEFAULT_PORT = 8080


class K8sRuntime(Runtime):
    name = "k8s"

    def __init__(
        self,
        namespace: str = "mesh",
        api_client: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.namespace = namespace
        self._api_client = api_client
        self._kube: Kube | None = None
        # Where the port-forwards of k8s/README.md put the gateway and Consul.
        self.gateway_url = env.get("MESH_GATEWAY_URL", "http://127.0.0.1:8080")
        self.api_key = env.get("MESH_API_KEY", "")
        self.consul_url = env.get("MESH_CONSUL_ADDR", "http://127.0.0.1:8500")
        self._events: dict[str, list[RolloutEvent]] = {}  # progress lines seen per rollout
        self._finished_at: dict[str, float] = {}

    @property
    def kube(self) -> Kube:
        if self._kube is None:  # lazily: a kubeconfig is only needed once the API is used
            self._kube = Kube(self._api_client)
        return self._kube

    # -- reads ---------------------------------------------------------------------------------
    def _deployments(self, service: str | None = None) -> list[Any]:
        selector = f"{NAME}={service}" if service else NAME
        k = self.kube
        listed = k.call(
            "list deployments",
            k.apps.list_namespaced_deployment,
            self.namespace,
            label_selector=selector,
        )
        return list(listed.items)

    def _deployment(self, name: str) -> Any:
        k = self.kube
        return k.call(f"deployment {name}", k.apps.read_namespaced_deployment, name, self.namespace)

    def _replica_sets(self, service: str | None = None) -> list[Any]:
        selector = f"{NAME}={service}" if service else NAME
        k = self.kube
        listed = k.call(
            "list replicasets",
            k.apps.list_namespaced_replica_set,
            self.namespace,
            label_selector=selector,
        )
        return list(listed.items)

    def _hpas(self) -> dict[str, Any]:
        """The HPAs by the name of the Deployment they scale."""
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

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: Progress = quiet) -> PlatformStatus:
        raise RuntimeFailure("on k8s, start the platform with make k8s-up (kustomize + kubectl)")

    def down(self, progress: Progress = quiet) -> list[str]:
        raise RuntimeFailure("on k8s, stop the platform with make k8s-down")

    def running(self) -> bool:
        try:
            deployments = self._deployments()
        except RuntimeFailure:
            return False
        return any((d.status.ready_replicas or 0) > 0 for d in deployments)

    # -- state ---------------------------------------------------------------------------------
    def status(self) -> PlatformStatus:
        deployments = self._deployments()
        replica_sets = self._replica_sets()
        by_service: dict[str, list[Any]] = {}
        for d in deployments:
            by_service.setdefault(d.metadata.labels[NAME], []).append(d)
        services = [
            self._service_status(name, group, replica_sets)
            for name, group in sorted(by_service.items())
        ]
        gateway_service = next((s for s in services if s.kind == "gateway"), None)
        gateway = None
        if gateway_service is not None:
            gateway = GatewayInfo(
                url=self.gateway_url,
                api_key=self.api_key,
                healthy=gateway_service.healthy > 0,
                name=gateway_service.name,
            )
        return PlatformStatus(
            runtime=self.name,
            gateway=gateway,
            services=[s for s in services if s.kind != "gateway"],
            infra={},
        )

    def _service_status(
        self, service: str, deployments: list[Any], replica_sets: list[Any]
    ) -> ServiceStatus:
        desired: dict[str, int] = {}
        stable: str | None = None
        kind = "http"
        rollout: str | None = None
        for d in deployments:
            version = _deployment_version(d)
            desired[version] = desired.get(version, 0) + (d.spec.replicas or 0)
            if d.metadata.name == service:
                stable = version
                if d.metadata.labels.get(COMPONENT) == "gateway":
                    kind = "gateway"
                if _record(d) is not None:
                    state = deployment_rollout(d).state
                    rollout = {"done": None, "waiting": "progressing"}.get(state, state)
        # Running pods per version: a rolling update has two ReplicaSets of one Deployment.
        versions: dict[str, int] = {}
        for rs in replica_sets:
            if rs.metadata.labels.get(NAME) != service or not (rs.status.replicas or 0):
                continue
            version = _template_version(rs.spec.template)
            versions[version] = versions.get(version, 0) + rs.status.replicas
        return ServiceStatus(
            name=service,
            replicas=sum(d.status.replicas or 0 for d in deployments),
            healthy=sum(d.status.ready_replicas or 0 for d in deployments),
            versions=versions,
            desired=desired,
            stable=stable,
            kind=kind,
            rollout=rollout,
        )

    def replicas(self, service: str | None = None) -> list[ReplicaInfo]:
        selector = f"{NAME}={service}" if service else NAME
        k = self.kube
        pods = k.call(
            "list pods", k.core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        return [_replica(p) for p in pods.items]

    def consul_address(self) -> str:
        return self.consul_url

    def consumer_lag(self, service: str) -> float | None:
        return None  # the pods are not reachable from here; KEDA reads the lag in-cluster

    # -- scaling -------------------------------------------------------------------------------
    def scale(self, service: str, replicas: int) -> ServiceStatus:
        if replicas < 0:
            raise RuntimeFailure(f"replicas must be 0 or more, not {replicas}")
        k = self.kube
        k.call(
            f"scale deployment {service}",
            k.apps.patch_namespaced_deployment_scale,
            service,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )
        hpa = self._hpas().get(service)
        if hpa is not None and replicas > 0:
            spec = {"minReplicas": replicas, "maxReplicas": max(replicas, hpa.spec.max_replicas)}
            k.call(
                f"horizontalpodautoscaler {hpa.metadata.name}",
                k.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                hpa.metadata.name,
                self.namespace,
                {"spec": spec},
            )
        return self._service_status(
            service, self._deployments(service), self._replica_sets(service)
        )

    def kill_replica(self, replica_id: str, signal: str = "KILL") -> ReplicaInfo:
        k = self.kube
        pod = k.call(f"pod {replica_id}", k.core.read_namespaced_pod, replica_id, self.namespace)
        grace = 0 if signal.upper() in ("KILL", "SIGKILL", "9") else None
        k.call(
            f"delete pod {replica_id}",
            k.core.delete_namespaced_pod,
            replica_id,
            self.namespace,
            grace_period_seconds=grace,
        )
        return _replica(pod).model_copy(update={"state": "stopping"})

    def autoscale(self, enabled: bool | None = None) -> AutoscaleStatus:
        if enabled is not None:
            raise RuntimeFailure(
                "on k8s the HorizontalPodAutoscalers are the autoscaler: kubectl apply or delete "
                "them (k8s/base/apps)"
            )
        hpas = self._hpas()
        return AutoscaleStatus(
            enabled=bool(hpas),
            services={name: [_decision(name, hpa)] for name, hpa in sorted(hpas.items())},
        )

    # -- rollouts ------------------------------------------------------------------------------
    def rollout(self, spec: RolloutSpec) -> RolloutStatus:
        if spec.strategy != "rolling":
            raise RuntimeFailure(
                f"{spec.strategy} rollouts are not implemented on the k8s runtime yet; "
                "use --strategy rolling"
            )
        deployment = self._deployment(spec.service)
        stable = _deployment_version(deployment)
        record = _record(deployment)
        if record is not None and deployment_rollout(deployment).state == "waiting":
            raise RuntimeFailure(
                f"{spec.service} already has a rollout in progress "
                f"(meshctl rollout status|abort {spec.service})"
            )
        if spec.version == stable:
            raise RuntimeFailure(f"{spec.service} already runs {stable}")
        if not deployment.spec.replicas:
            raise RuntimeFailure(f"{spec.service} has no {stable} replica to replace: scale it")
        record = {
            "strategy": "rolling",
            "stable": stable,
            "version": spec.version,
            "started_at": time.time(),
            "state": "progressing",
        }
        self._set_version(deployment, spec.version, record)
        state = self.rollout_status(spec.service)
        assert state is not None
        return state

    def _set_version(self, deployment: Any, version: str, record: dict[str, Any]) -> None:
        """Patch (strategic merge) the version into the Deployment and its pod template."""
        container = _version_container(deployment)
        patch = {
            "metadata": {
                "labels": {VERSION: version},
                "annotations": {ROLLOUT: json.dumps(record, sort_keys=True)},
            },
            "spec": {
                "template": {
                    "metadata": {"annotations": {VERSION: version}},
                    "spec": {
                        "containers": [
                            {"name": container, "env": [{"name": VERSION_ENV, "value": version}]}
                        ]
                    },
                }
            },
        }
        name = deployment.metadata.name
        k = self.kube
        k.call(
            f"patch deployment {name}",
            k.apps.patch_namespaced_deployment,
            name,
            self.namespace,
            patch,
        )

    def rollout_status(self, service: str) -> RolloutStatus | None:
        deployment = self._deployment(service)
        record = _record(deployment)
        if record is None:
            return None
        rule = deployment_rollout(deployment)
        aborting = record.get("state") == "aborting"
        phase = {
            ("done", False): "completed",
            ("done", True): "aborted",
            ("failed", False): "failed",
            ("failed", True): "failed",
            ("waiting", False): "progressing",
            ("waiting", True): "aborting",
        }[(rule.state, aborting)]
        key = f"{service}@{record['started_at']}"
        events = self._events.setdefault(key, [])
        if not events or events[-1].message != rule.message:
            events.append(RolloutEvent(at=time.time(), message=rule.message))
        finished_at = None
        if rule.state != "waiting":
            finished_at = self._finished_at.setdefault(key, time.time())
        message = rule.message
        if rule.state == "failed":
            message += f" (meshctl rollout abort {service} goes back to {record['stable']})"
        return RolloutStatus(
            service=service,
            strategy="rolling",
            stable=record["stable"],
            version=record["version"],
            phase=phase,  # type: ignore[arg-type]
            message=message,
            step=rule.updated,
            events=list(events),
            started_at=float(record["started_at"]),
            finished_at=finished_at,
        )

    def rollout_abort(self, service: str) -> RolloutStatus:
        deployment = self._deployment(service)
        record = _record(deployment)
        state = deployment_rollout(deployment).state if record else None
        if record is None or (state == "done" and record.get("state") != "aborting"):
            raise RuntimeFailure(f"no rollout of {service} in progress")
        if record.get("state") != "aborting":
            # Like `kubectl rollout undo`: the old template again, so the old ReplicaSet returns.
            self._set_version(deployment, record["stable"], {**record, "state": "aborting"})
        status = self.rollout_status(service)
        assert status is not None
        return status

    def rollout_promote(self, service: str) -> RolloutStatus:
        raise RuntimeFailure("a rolling update has nothing to promote")


# -- helpers ---------------------------------------------------------------------------------
def _record(deployment: Any) -> dict[str, Any] | None:
    raw = (deployment.metadata.annotations or {}).get(ROLLOUT)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _deployment_version(deployment: Any) -> str:
    labels = deployment.metadata.labels or {}
    return str(labels.get(VERSION) or _template_version(deployment.spec.template))


def _template_version(template: Any) -> str:
    """A pod template's version: the annotation a rollout sets, else the label, else the env."""
    meta = template.metadata
    version = (meta.annotations or {}).get(VERSION) or (meta.labels or {}).get(VERSION)
    if version:
        return str(version)
    for container in template.spec.containers or []:
        for env in container.env or []:
            if env.name == VERSION_ENV and env.value:
                return str(env.value)
    return "v1"


def _version_container(deployment: Any) -> str:
    containers = deployment.spec.template.spec.containers or []
    for container in containers:
        if any(env.name == VERSION_ENV for env in container.env or []):
            return str(container.name)
    if not containers:
        raise RuntimeFailure(f"deployment {deployment.metadata.name} has no container")
    return str(containers[0].name)


def _replica(pod: Any) -> ReplicaInfo:
    status = pod.status
    conditions = {c.type: c.status for c in status.conditions or []}
    ready = conditions.get("Ready") == "True"
    statuses = status.container_statuses or []
    waiting = {s.state.waiting.reason for s in statuses if s.state and s.state.waiting}
    if pod.metadata.deletion_timestamp is not None:
        state = "stopping"
    elif "CrashLoopBackOff" in waiting:
        state = "crashloop"
    elif status.phase == "Failed":
        state = "failed"
    elif ready:
        state = "ready"
    elif status.phase == "Running" and any(s.started for s in statuses):
        state = "unhealthy"
    else:
        state = "starting"
    port = DEFAULT_PORT
    for container in pod.spec.containers or []:
        for p in container.ports or []:
            if p.name == "http":
                port = p.container_port
    started = status.start_time.timestamp() if status.start_time else None
    return ReplicaInfo(
        id=pod.metadata.name,
        service=(pod.metadata.labels or {}).get(NAME, ""),
        version=_template_version(pod),
        address=f"{status.pod_ip}:{port}" if status.pod_ip else "",
        state=state,
        port=port,
        restarts=sum(s.restart_count or 0 for s in statuses),
        started_at=started,
        passing=ready,
    )


def _decision(service: str, hpa: Any) -> ScaleDecision:
    """What the HPA last decided, in the local autoscaler's terms (CPU utilization, %)."""
    spec, status = hpa.spec, hpa.status
    targets = {
        m.resource.name: m.resource.target.average_utilization
        for m in spec.metrics or []
        if m.type == "Resource" and m.resource is not None
    }
    readings = []
    for m in status.current_metrics or []:
        if m.type != "Resource" or m.resource is None or m.resource.name not in targets:
            continue
        value = m.resource.current.average_utilization
        target = float(targets[m.resource.name] or 0)
        ratio = value / target if value is not None and target else None
        readings.append(
            MetricReading(name=m.resource.name, value=value, target=target, ratio=ratio)
        )
    reason = ""
    for condition in status.conditions or []:
        if condition.type == "ScalingActive" or (condition.type == "ScalingLimited" and not reason):
            reason = f"{condition.reason}: {condition.message or ''}".strip(": ")
    current = status.current_replicas or 0
    desired = status.desired_replicas or 0
    at = status.last_scale_time.timestamp() if status.last_scale_time else time.time()
    return ScaleDecision(
        at=at,
        service=service,
        current=current,
        metrics=readings,
        raw_desired=desired,
        stabilized=desired,
        up_limit=spec.max_replicas,
        down_limit=spec.min_replicas or 1,
        desired=desired,
        min_replicas=spec.min_replicas or 1,
        max_replicas=spec.max_replicas,
        reason=reason,
    )
