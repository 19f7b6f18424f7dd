"""``K8sRuntime``: the :class:`~infra.runtime.base.Runtime` of the ``k8s/`` manifests.

Everything is read from and written to the API server (Deployments, ReplicaSets, Pods, HPAs,
StatefulSets in one namespace), gateway metrics and smoke requests included (through its proxy
subresource), so meshctl needs a kubeconfig and nothing else but Consul (see
:meth:`K8sRuntime.consul_address`). Only the application tier (``mesh.demo/tier=app``) counts
as services; the StatefulSets of ``mesh.demo/tier=infra`` are the infrastructure.

- ``scale`` patches the Deployment's scale subresource. When an HPA targets the Deployment it
  would undo that, so its ``minReplicas`` is raised to the count (``maxReplicas`` too if it is
  lower): the HPA keeps at least that many and may still scale up under load.
- A rolling rollout is the Deployment's own RollingUpdate: the container's ``SERVICE_VERSION``
  changes (one image serves every version, as ``k8s/components/canary`` shows), the version
  goes into the Deployment's label and the pod template's annotation (the selector, and so the
  template labels, cannot change), and the rollout record into an annotation. Its status is
  the ``kubectl rollout status`` rule; an abort rolls the template back to the old version.
- Blue-green and canary are the shared strategies of ``infra/local/rollouts``, driven by this
  meshctl process (:mod:`infra.k8s.driver`) against versioned Deployments and the gateway
  weights in Consul KV (:mod:`infra.k8s.target`).
- ``stop_infra``/``start_infra`` scale a StatefulSet to 0 and back to the count it had.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from infra.k8s.client import Kube
from infra.k8s.cluster import Autoscaler, Cluster
from infra.k8s.driver import RolloutDriver
from infra.k8s.objects import (
    COMPONENT,
    NAME,
    TIER,
    VERSION,
    VERSION_ENV,
    deployment_version,
    rollout_record,
    template_version,
)
from infra.k8s.rollout_rule import deployment_rollout
from infra.k8s.target import K8sTarget
from infra.runtime.base import Progress, Runtime, RuntimeFailure, quiet
from infra.runtime.kv import KVError
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
from infra.runtime.versions import parse_cpu, parse_memory

DEFAULT_PORT = 8080
# The infrastructure parts and their StatefulSets (k8s/base/infra).
INFRA_STATEFULSETS = {"kafka": "kafka", "redis": "redis", "consul": "consul"}
STOPPED = "mesh.demo/stopped-replicas"  # on a StatefulSet stop_infra scaled to 0: the count
INFRA_TIMEOUT = 300.0


class K8sRuntime(Runtime):
    name = "k8s"

    def __init__(
        self,
        namespace: str = "mesh",
        api_client: Any = None,
        environ: Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        env = os.environ if environ is None else environ
        self.namespace = namespace
        self.cluster = Cluster(namespace, api_client, poll_interval)
        # Where the port-forwards of k8s/README.md put the gateway and Consul.
        self.gateway_url = env.get("MESH_GATEWAY_URL", "http://127.0.0.1:8080")
        self.api_key = env.get("MESH_API_KEY", "")
        self.consul_url = (
            env.get("MESH_CONSUL_ADDR") or env.get("CONSUL_HTTP_ADDR") or "http://127.0.0.1:8500"
        )
        self._events: dict[str, list[RolloutEvent]] = {}  # progress lines seen per rollout
        self._finished_at: dict[str, float] = {}
        self.target = K8sTarget(self.cluster, self.set_weights, self.api_key)
        self.driver = RolloutDriver(self.target, self._check_rollout)

    @property
    def kube(self) -> Kube:
        return self.cluster.kube

    def close(self) -> None:
        """Roll back a blue-green or canary rollout still running in this process, stop its
        thread. meshctl need not call it: its exit waits for (or rolls back) the rollout."""
        self.driver.close()

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, progress: Progress = quiet) -> PlatformStatus:
        raise RuntimeFailure("on k8s, start the platform with make k8s-up (kustomize + kubectl)")

    def down(self, progress: Progress = quiet) -> list[str]:
        raise RuntimeFailure("on k8s, stop the platform with make k8s-down")

    def running(self) -> bool:
        try:
            deployments = self.cluster.deployments()
        except RuntimeFailure:
            return False
        return any((d.status.ready_replicas or 0) > 0 for d in deployments)

    # -- state ---------------------------------------------------------------------------------
    def status(self) -> PlatformStatus:
        deployments = self.cluster.deployments()
        replica_sets = self.cluster.replica_sets()
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
            infra=self._infra_status(),
        )

    def _service_status(
        self, service: str, deployments: list[Any], replica_sets: list[Any]
    ) -> ServiceStatus:
        desired: dict[str, int] = {}
        stable: str | None = None
        kind = "http"
        rollout: str | None = None
        for d in deployments:
            version = template_version(d.spec.template)
            desired[version] = desired.get(version, 0) + (d.spec.replicas or 0)
            if d.metadata.name == service:
                stable = deployment_version(d)
                if d.metadata.labels.get(COMPONENT) == "gateway":
                    kind = "gateway"
                if rollout_record(d) is not None:
                    state = deployment_rollout(d).state
                    rollout = {"done": None, "waiting": "progressing"}.get(state, state)
        weights = None
        driven = self.driver.get(service)
        if driven is not None and not driven.finished:
            rollout, weights = driven.phase, driven.weights
        # Running pods per version: a rolling update has two ReplicaSets of one Deployment.
        versions: dict[str, int] = {}
        for rs in replica_sets:
            if rs.metadata.labels.get(NAME) != service or not (rs.status.replicas or 0):
                continue
            version = template_version(rs.spec.template)
            versions[version] = versions.get(version, 0) + rs.status.replicas
        return ServiceStatus(
            name=service,
            replicas=sum(d.status.replicas or 0 for d in deployments),
            healthy=sum(d.status.ready_replicas or 0 for d in deployments),
            versions=versions,
            desired=desired,
            stable=stable,
            kind=kind,
            weights=weights,
            rollout=rollout,
        )

    def _infra_status(self) -> dict[str, dict[str, Any]]:
        by_name = {s.metadata.name: s for s in self.cluster.statefulsets()}
        out: dict[str, dict[str, Any]] = {}
        for part, name in INFRA_STATEFULSETS.items():
            sts = by_name.get(name)
            if sts is None:
                continue
            replicas, ready = sts.spec.replicas or 0, sts.status.ready_replicas or 0
            out[part] = {
                "address": None,  # in-cluster only (kubectl port-forward to reach it)
                "source": f"statefulset/{name}",
                "healthy": replicas > 0 and ready >= replicas,
                "replicas": replicas,
                "ready": ready,
            }
        return out

    def replicas(self, service: str | None = None) -> list[ReplicaInfo]:
        labels = {TIER: "app", NAME: service} if service else {TIER: "app"}
        return [_replica(p) for p in self.cluster.pods(labels)]

    def consul_address(self) -> str:
        """Consul is inside the cluster: meshctl reaches it through
        ``kubectl -n mesh port-forward svc/consul 8500:8500`` at ``MESH_CONSUL_ADDR`` (else
        ``CONSUL_HTTP_ADDR``, else ``http://127.0.0.1:8500``). The traffic weights live there."""
        return self.consul_url

    def consumer_lag(self, service: str) -> float | None:
        return None  # the pods are not reachable from here; KEDA reads the lag in-cluster

    # -- scaling -------------------------------------------------------------------------------
    def scale(self, service: str, replicas: int) -> ServiceStatus:
        if replicas < 0:
            raise RuntimeFailure(f"replicas must be 0 or more, not {replicas}")
        if self.driver.active(service):
            raise RuntimeFailure(
                f"{service} has a rollout in progress: wait for it or abort it first"
            )
        self.cluster.scale_deployment(service, replicas, hpa_floor=True)
        c = self.cluster
        return self._service_status(service, c.deployments(service), c.replica_sets(service))

    def kill_replica(self, replica_id: str, signal: str = "KILL") -> ReplicaInfo:
        """``KILL``: SIGKILL the pod's app process through ``pods/exec`` (a crash: no SIGTERM,
        no preStop, no deregistration; the kubelet restarts the container in the same pod).
        A pod deletion would not do: even with ``gracePeriodSeconds=0`` (which only removes the
        object from the API at once) the kubelet sends SIGTERM first and waits. Any other
        signal is a graceful deletion of the pod."""
        pod = self.cluster.pod(replica_id)
        if signal.upper() not in ("KILL", "SIGKILL", "9"):
            k = self.kube
            k.call(
                f"delete pod {replica_id}",
                k.core.delete_namespaced_pod,
                replica_id,
                self.namespace,
            )
            return _replica(pod).model_copy(update={"state": "stopping"})
        self.cluster.kill_container(pod, _app_container(pod))
        return _replica(pod).model_copy(update={"state": "failed", "last_exit": 137})

    def autoscale(self, enabled: bool | None = None) -> AutoscaleStatus:
        """The HPAs (or KEDA's ScaledObjects) are the autoscaler. ``False`` pauses every one of
        the services' at the count it runs; ``True`` resumes them and checks that each can read
        its metrics (the CPU HPAs need metrics-server, which kind does not ship)."""
        apps = {d.metadata.name: d for d in self.cluster.deployments()}
        scalers = {n: s for n, s in self.cluster.autoscalers().items() if n in apps}
        if enabled is not None and not scalers:
            raise RuntimeFailure(
                f"no HorizontalPodAutoscaler or ScaledObject scales a service in namespace "
                f"{self.namespace} (kubectl apply -k k8s/overlays/dev puts them there)"
            )
        if enabled is False:
            for name, scaler in scalers.items():
                self.cluster.pause(scaler, apps[name].spec.replicas or 1)
        elif enabled:
            for scaler in scalers.values():
                self.cluster.resume(scaler)
            _check_metrics(scalers.values())
        if enabled is not None:
            scalers = {n: s for n, s in self.cluster.autoscalers().items() if n in apps}
        return AutoscaleStatus(
            enabled=any(not s.paused for s in scalers.values()),
            services={
                name: [_decision(name, s.hpa)]
                for name, s in sorted(scalers.items())
                if s.hpa is not None
            },
        )

    # -- infrastructure ------------------------------------------------------------------------
    def _statefulset(self, part: str) -> Any:
        name = INFRA_STATEFULSETS.get(part)
        if name is None:
            raise RuntimeFailure(
                f"unknown infrastructure part {part!r} (known: {', '.join(INFRA_STATEFULSETS)})"
            )
        return self.cluster.statefulset(name)

    def stop_infra(self, part: str, *, timeout: float = INFRA_TIMEOUT) -> None:
        """Scale the part's StatefulSet to 0 and wait until its pods are gone. The count it had
        goes into an annotation first, so ``start_infra`` finds it from any meshctl."""
        sts = self._statefulset(part)
        name = sts.metadata.name
        replicas = sts.spec.replicas if sts.spec.replicas is not None else 1
        if part == "kafka":
            _check_keeps_topics(sts)
        if part == "consul" and replicas > 1:
            raise RuntimeFailure(
                f"statefulset {name} runs {replicas} Consul servers: stopped together, they come "
                "back with new pod IPs and elect no leader, since Raft still knows the old "
                "addresses (hashicorp/consul#10678); not stopping them (delete one pod to "
                "rehearse a server failure, k8s/README.md)"
            )
        if replicas > 0:
            self.cluster.patch_statefulset(
                name, {"metadata": {"annotations": {STOPPED: str(replicas)}}}
            )
            self.cluster.scale_statefulset(name, 0)
        self._wait_statefulset(part, 0, timeout, quiet)

    def start_infra(
        self, part: str, progress: Progress = quiet, *, timeout: float = INFRA_TIMEOUT
    ) -> None:
        """Scale the part's StatefulSet back to the count ``stop_infra`` recorded and wait until
        every pod is ready.

        Kafka's topics need no new ``kafka-topics`` Job: the brokers keep their log and KRaft
        metadata directories (``KAFKA_LOG_DIRS``) on the StatefulSet's PersistentVolumeClaims,
        which a scale to 0 keeps (``stop_infra`` refuses a StatefulSet that would lose them),
        so the topics come back with the brokers. Pods re-register in a restarted Consul by
        themselves; its KV (the traffic weights) is on a volume too. A ``kubectl
        port-forward`` to a stopped pod ends with it: start it again after ``start_infra``.
        """
        sts = self._statefulset(part)
        name = sts.metadata.name
        recorded = (sts.metadata.annotations or {}).get(STOPPED)
        want = int(recorded) if recorded and recorded.isdigit() else (sts.spec.replicas or 1)
        if sts.spec.replicas != want:
            self.cluster.scale_statefulset(name, want)
        self._wait_statefulset(part, want, timeout, progress)
        if recorded is not None:
            self.cluster.patch_statefulset(name, {"metadata": {"annotations": {STOPPED: None}}})

    def _wait_statefulset(
        self, part: str, replicas: int, timeout: float, progress: Progress
    ) -> None:
        said: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            sts = self._statefulset(part)
            status = sts.status
            observed = (status.observed_generation or 0) >= (sts.metadata.generation or 0)
            running, ready = status.replicas or 0, status.ready_replicas or 0
            line = f"{part}: {ready}/{replicas} ready, {running} running"
            if not said or said[-1] != line:
                progress(line)
                said.append(line)
            if observed and running == replicas and ready == replicas:
                return
            if time.monotonic() >= deadline:
                raise RuntimeFailure(f"{line} after {timeout:.0f}s")
            time.sleep(self.cluster.poll_interval)

    # -- rollouts ------------------------------------------------------------------------------
    def rollout(self, spec: RolloutSpec) -> RolloutStatus:
        if spec.strategy != "rolling":
            return self.driver.start(spec)
        if self.driver.active(spec.service):
            raise RuntimeFailure(
                f"{spec.service} already has a rollout in progress "
                f"(meshctl rollout status|abort {spec.service})"
            )
        deployment = self.cluster.deployment(spec.service)
        stable = deployment_version(deployment)
        record = rollout_record(deployment)
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
        self.cluster.set_version(deployment, spec.version, record)
        state = self._rolling_status(spec.service)
        assert state is not None
        return state

    def _check_rollout(self, spec: RolloutSpec) -> str:
        """Before a blue-green or canary (on the rollout thread): what would make it fail
        half-way, refused now. Returns the stable version."""
        service = spec.service
        deployment = self.cluster.deployment(service)
        if (deployment.metadata.labels or {}).get(COMPONENT) == "gateway":
            raise RuntimeFailure(
                "the gateway weighs the services' versions, not its own: "
                "roll it out with --strategy rolling"
            )
        record = rollout_record(deployment)
        if record is not None and deployment_rollout(deployment).state == "waiting":
            raise RuntimeFailure(
                f"{service} has a rolling rollout in progress "
                f"(meshctl rollout status|abort {service})"
            )
        stable = deployment_version(deployment)
        match = dict(deployment.spec.selector.match_labels or {})
        if VERSION not in match:
            raise RuntimeFailure(
                f"deployment {service} does not select on {VERSION}: "
                "its pods and those of another version would mix"
            )
        if match[VERSION] == spec.version and spec.version != stable:
            raise RuntimeFailure(
                f"{service}-{spec.version} would select the pods of deployment {service} "
                f"({VERSION}={spec.version} is in its selector): go back to {spec.version} "
                "with --strategy rolling"
            )
        for other in self.cluster.deployments(service):
            version = template_version(other.spec.template)
            if other.metadata.name == service or not other.spec.replicas:
                continue
            if version not in (stable, spec.version):
                raise RuntimeFailure(
                    f"{other.metadata.name} runs {version} beside {service}: the weights name "
                    f"two versions only; scale it to 0 or delete it first "
                    f"(kubectl -n {self.namespace} delete deployment {other.metadata.name})"
                )
        try:
            self.weights(service)
        except KVError as exc:
            raise RuntimeFailure(
                f"{exc}: the weights live in Consul; kubectl -n {self.namespace} port-forward "
                "svc/consul 8500:8500 and set MESH_CONSUL_ADDR"
            ) from None
        smoking = spec.strategy == "bluegreen" and spec.smoke_requests > 0
        if smoking and not self.api_key and self.target.smoke_path(service):
            raise RuntimeFailure(
                "blue-green's smoke requests need the gateway's API key in MESH_API_KEY "
                "(k8s/README.md), or --smoke-requests 0"
            )
        return stable

    def rollout_status(self, service: str) -> RolloutStatus | None:
        driven = self.driver.get(service)
        if driven is not None and not driven.finished:
            return driven  # a rolling update cannot run beside it: no need to read one
        rolling = self._rolling_status(service)
        if driven is None or (rolling is not None and rolling.started_at > driven.started_at):
            return rolling
        return driven

    def _rolling_status(self, service: str) -> RolloutStatus | None:
        deployment = self.cluster.deployment(service)
        record = rollout_record(deployment)
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
        if self.driver.active(service):
            return self.driver.abort(service)
        deployment = self.cluster.deployment(service)
        record = rollout_record(deployment)
        state = deployment_rollout(deployment).state if record else None
        if record is None or (state == "done" and record.get("state") != "aborting"):
            raise RuntimeFailure(self._no_rollout(service))
        if record.get("state") != "aborting":
            # Like `kubectl rollout undo`: the old template again, so the old ReplicaSet returns.
            self.cluster.set_version(deployment, record["stable"], {**record, "state": "aborting"})
        status = self._rolling_status(service)
        assert status is not None
        return status

    def rollout_promote(self, service: str) -> RolloutStatus:
        if self.driver.active(service):
            return self.driver.promote(service)
        deployment = self.cluster.deployment(service)
        if rollout_record(deployment) is not None and deployment_rollout(deployment).state == (
            "waiting"
        ):
            raise RuntimeFailure("a rolling update has nothing to promote")
        raise RuntimeFailure(self._no_rollout(service))

    def _no_rollout(self, service: str) -> str:
        last = self.rollout_status(service)
        return f"no rollout of {service} in progress" + (f" (last: {last.phase})" if last else "")


# -- helpers ---------------------------------------------------------------------------------
def _check_keeps_topics(sts: Any) -> None:
    """Refuse to stop a Kafka whose data would not survive: its topics would be gone when it
    starts again, and nothing re-creates them but a new kafka-topics Job."""
    claims = {c.metadata.name for c in sts.spec.volume_claim_templates or []}
    mounted = {
        m.name for c in sts.spec.template.spec.containers or [] for m in c.volume_mounts or []
    }
    policy = sts.spec.persistent_volume_claim_retention_policy
    dropped = policy is not None and policy.when_scaled == "Delete"
    if not claims & mounted or dropped:
        raise RuntimeFailure(
            f"statefulset {sts.metadata.name} keeps no data across a scale to 0 (no mounted "
            "volume claim, or whenScaled: Delete): its topics would be lost; not stopping it"
        )


def _app_container(pod: Any) -> str:
    """The container of a pod that serves its app: the one reading SERVICE_VERSION."""
    containers = pod.spec.containers or []
    for container in containers:
        if any(env.name == VERSION_ENV for env in container.env or []):
            return str(container.name)
    return str(containers[0].name)


def _check_metrics(scalers: Iterable[Autoscaler]) -> None:
    """Refuse an autoscaler that cannot read its metrics: the HPA controller says so in its
    ScalingActive condition (FailedGetResourceMetric without metrics-server)."""
    for scaler in scalers:
        if scaler.hpa is None or scaler.paused:
            continue
        for condition in scaler.hpa.status.conditions or []:
            reason = condition.reason or ""
            if condition.type != "ScalingActive" or condition.status != "False":
                continue
            if not reason.startswith("FailedGet"):
                continue
            source = (
                "KEDA's metrics API server (keda-operator-metrics-apiserver)"
                if scaler.keda
                else "metrics-server (the resource metrics API; kind does not ship it)"
            )
            raise RuntimeFailure(
                f"{scaler.name} cannot read its metrics ({reason}: {condition.message or ''}): "
                f"it needs {source}, see k8s/README.md"
            )


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
        version=template_version(pod),
        address=f"{status.pod_ip}:{port}" if status.pod_ip else "",
        state=state,
        port=port,
        restarts=sum(s.restart_count or 0 for s in statuses),
        started_at=started,
        passing=ready,
        **_app_usage(pod),
    )


def _app_usage(pod: Any) -> dict[str, Any]:
    """Why the app container last ended (the kubelet's ``lastState.terminated.reason``:
    OOMKilled, Error, Completed) and its limits, from the pod spec. Kubernetes keeps only the
    last termination, so ``oom_kills`` is 1 when that one was an OOM kill. Memory in use needs
    the metrics API (metrics-server), which the adapter does not read: unknown."""
    if not pod.spec.containers:
        return {}
    name = _app_container(pod)
    app = next(c for c in pod.spec.containers if c.name == name)
    found: dict[str, Any] = {}
    limits = (app.resources.limits if app.resources else None) or {}
    try:
        if limits.get("memory"):
            found["memory_limit_bytes"] = parse_memory(str(limits["memory"]))
        if limits.get("cpu"):
            found["cpu_limit_millicores"] = parse_cpu(str(limits["cpu"]))
    except ValueError:
        pass  # a quantity written in a unit no version file uses: shown as unknown
    for status in pod.status.container_statuses or []:
        last = status.last_state.terminated if status.last_state else None
        if status.name == name and last is not None and last.reason:
            found["last_reason"] = str(last.reason)
            found["oom_kills"] = 1 if last.reason == "OOMKilled" else 0
    return found


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
