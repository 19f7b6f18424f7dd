"""The rollout :class:`~infra.local.rollouts.target.Target` of the Kubernetes runtime.

Blue-green and canary are the shared strategies of ``infra/local/rollouts``, run against this
Target, so they step, judge and roll back exactly as on the local runtime. What changes is what
a "version with N replicas" is:

- the stable version runs in the service's own Deployment (``orders``): the one the manifests,
  its HPA and PDB and ``meshctl scale`` know;
- any other version runs in ``<service>-<version>`` (``orders-v2``): a copy of the stable pod
  template with the version changed in ``SERVICE_VERSION`` (what the pods register in Consul as
  ``Meta.version``, so what the gateway weighs), in the ``mesh.demo/version`` label (part of its
  selector, so versions never claim each other's pods) and annotation. It carries the service's
  ``app.kubernetes.io/name``, so ``meshctl status`` counts it as a version of the service, and an
  owner reference to the stable Deployment, so deleting a service deletes its versions. The
  ``canary`` and ``bluegreen`` components ship such Deployments already; a rollout reuses them.

Readiness is the Deployment's status (observed generation, updated and ready replicas, as
``kubectl rollout status`` reads it) *and* the gateway's own view: every gateway pod's
``gateway_upstream_instances`` gauge, scraped through the API server's pod proxy, must count the
new instances, as the local runtime waits until the gateway routes to them.

Every call here is synchronous and short (one API request); the strategies' coroutines run on
the rollout thread's own event loop (:mod:`infra.k8s.driver`), where blocking it for one request
holds up nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from infra.k8s.cluster import Cluster
from infra.k8s.objects import NAME, VERSION, template_version, versioned_deployment
from infra.k8s.rollout_rule import deployment_rollout
from infra.local import promtext
from infra.local.catalog import DEFAULT_PLATFORM, CatalogError, load_platform
from infra.local.rollouts.target import AbortRollout
from infra.runtime.base import RuntimeFailure

SMOKE_PATH = "mesh.demo/smoke-path"  # optional, on the stable Deployment: overrides the catalogue
INSTANCES = "gateway_upstream_instances"
GATEWAY_PORT_NAME = "http"  # the gateway Service's port (k8s/base/apps/gateway.yaml)
# A pod in one of these will not get ready by waiting: abort at once rather than at the timeout.
HOPELESS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"})


@dataclass
class Plan:
    """One rollout as the Target sees it: which version is in the stable Deployment."""

    stable: str  # the version the stable Deployment ran when the rollout began
    version: str  # the version rolled out
    prepared: bool = False  # the versioned Deployment is a fresh copy of the stable template
    committed: bool = False  # set_stable ran: the new version is the stable one, no way back


class K8sTarget:
    def __init__(
        self,
        cluster: Cluster,
        set_weights: Callable[[str, dict[str, int] | None], None],
        api_key: str,
    ) -> None:
        """``set_weights`` writes the gateway weights (Consul KV); ``api_key`` is the gateway's
        client key for blue-green's smoke requests."""
        self.cluster = cluster
        self._set_weights = set_weights
        self.api_key = api_key
        self.plans: dict[str, Plan] = {}
        # The last metrics text of every gateway pod seen. A pod that is gone (scaled down,
        # restarted elsewhere) keeps its last counters in the sum, so the sum never drops and
        # the difference of two scrapes stays an increase.
        self._scrapes: dict[str, str] = {}

    def begin(self, service: str, stable: str, version: str) -> None:
        self.plans[service] = Plan(stable, version)

    def _plan(self, service: str) -> Plan:
        plan = self.plans.get(service)
        if plan is None:
            raise AbortRollout(f"no rollout of {service} in this meshctl")
        return plan

    def _name(self, service: str, version: str) -> str:
        return service if version == self._plan(service).stable else f"{service}-{version}"

    # -- versions and their replica counts -----------------------------------------------------
    def stable(self, service: str) -> str:
        return self.cluster.deployment_version(service)

    def set_stable(self, service: str, version: str) -> None:
        # The stable Deployment already runs ``version`` (see set_desired): only mark that
        # there is nothing left to roll back.
        plan = self._plan(service)
        plan.stable, plan.committed = version, True

    def desired(self, service: str, version: str) -> int:
        """Replicas of every Deployment of the service whose pod template runs ``version``.
        A ``<service>-<version>`` this rollout has not made yet (a component's, or one left
        behind) counts as none: the first scale of the version makes it a fresh copy."""
        plan = self.plans.get(service)
        unprepared = f"{service}-{plan.version}" if plan and not plan.prepared else None
        return sum(
            d.spec.replicas or 0
            for d in self.cluster.deployments(service)
            if template_version(d.spec.template) == version and d.metadata.name != unprepared
        )

    def set_desired(self, service: str, version: str, count: int) -> None:
        plan = self._plan(service)
        if plan.committed:
            raise AbortRollout(f"{service} already runs {plan.version}: nothing to change")
        if version == plan.stable:
            self._set_stable_count(service, plan, count)
        else:
            self._set_versioned(service, version, count, plan)

    def _set_stable_count(self, service: str, plan: Plan, count: int) -> None:
        deployment = self.cluster.deployment(service)
        if count == 0:
            # Retiring the stable version. A Deployment cannot be renamed, so the new version
            # moves into the stable Deployment instead: its template takes the new version and
            # its own RollingUpdate (surge 1, unavailable 0) replaces the old pods, which get no
            # traffic any more (weights 0/100). wait_at_most then waits for those pods to be
            # ready and routed, and only then deletes <service>-<version>, whose pods leave as
            # any pod does (preStop, deregister, drain) while the stable ones serve. At no
            # instant has the new version fewer ready, routed instances than it had, so no
            # request is dropped; and the HPA, the PDB and `meshctl scale` keep their target.
            self.cluster.set_version(deployment, plan.version, record=None)
            return
        if template_version(deployment.spec.template) != plan.stable:
            # An abort during that hand-over: the stable Deployment goes back to the old version.
            self.cluster.set_version(deployment, plan.stable, record=None)
        if deployment.spec.replicas != count:
            # No HPA floor here: the stable HPA owns this count and may move it, as it always does.
            self.cluster.scale_deployment(service, count, hpa_floor=False)

    def _set_versioned(self, service: str, version: str, count: int, plan: Plan) -> None:
        name = f"{service}-{version}"
        existing = self.cluster.deployment_or_none(name)
        if count == 0:
            if existing is not None and existing.spec.replicas:
                self.cluster.scale_deployment(name, 0, hpa_floor=False)
            return
        if existing is None or not plan.prepared:
            stable = self.cluster.serialize(self.cluster.deployment(service))
            wanted = versioned_deployment(stable, service, version, count)
            if existing is None:
                self.cluster.create_deployment(wanted)
            else:
                self._replace_template(existing, wanted, count)
            plan.prepared = True
        # Through the scale subresource, raising the floor of an HPA that targets it (the
        # bluegreen component gives payments-v2 one): green must really get the count.
        self.cluster.scale_deployment(name, count, hpa_floor=True)

    def _replace_template(self, existing: Any, wanted: dict[str, Any], count: int) -> None:
        """A Deployment of that name exists (a component's, or left by an earlier rollout):
        make it the same copy of the stable template, keeping its own metadata."""
        current = self.cluster.serialize(existing)
        name = current["metadata"]["name"]
        selector = current["spec"]["selector"].get("matchLabels", {})
        if selector != wanted["spec"]["selector"]["matchLabels"]:
            raise AbortRollout(
                f"deployment {name} selects {_labels(selector)}, not "
                f"{_labels(wanted['spec']['selector']['matchLabels'])}: delete it first"
            )
        current["metadata"].setdefault("labels", {})[VERSION] = wanted["metadata"]["labels"][
            VERSION
        ]
        current["spec"]["template"] = wanted["spec"]["template"]
        current["spec"]["replicas"] = count
        current.pop("status", None)
        self.cluster.replace_deployment(current)

    # -- waiting -------------------------------------------------------------------------------
    async def wait_ready(self, service: str, version: str, count: int, timeout: float) -> None:
        name = self._name(service, version)
        deadline = time.monotonic() + timeout
        while True:
            d = self.cluster.deployment(name)
            rule = deployment_rollout(d)
            ready = d.status.ready_replicas or 0
            # The stable Deployment's HPA may have moved its count since we set it.
            want = min(count, d.spec.replicas or count)
            runs = template_version(d.spec.template) == version
            if rule.state == "failed":
                raise AbortRollout(f"{service} {version}: {rule.message}")
            if runs and rule.state == "done" and ready >= want:
                if self._routed(service, version, want):
                    return
                waiting = "the gateway does not route to them yet"
            else:
                waiting = rule.message
            self._check_pods(service, version, d)
            if time.monotonic() >= deadline:
                raise AbortRollout(
                    f"{service} {version}: {ready}/{want} ready after {timeout:g}s ({waiting})"
                )
            await asyncio.sleep(self.cluster.poll_interval)

    async def wait_at_most(self, service: str, version: str, count: int, timeout: float) -> None:
        plan = self._plan(service)
        if version == plan.stable and count == 0:
            await self._hand_over(service, plan, timeout)
            return
        name = self._name(service, version)
        await self._wait_pods_gone(service, version, name, count, timeout)
        if count == 0 and name != service:
            # A version with no pod left has no business in the namespace: an aborted canary
            # leaves it as it found it (the next rollout of that version makes a fresh copy).
            self.cluster.delete_versioned(name)

    async def _hand_over(self, service: str, plan: Plan, timeout: float) -> None:
        """Wait for the stable Deployment to run the new version (set_desired started that),
        then remove the versioned one. The stable pods are replaced one at a time, so the wait
        gets ``timeout`` per replica."""
        versioned = f"{service}-{plan.version}"
        started = time.monotonic()
        while True:
            d = self.cluster.deployment(service)
            rule = deployment_rollout(d)
            budget = timeout * max(1, d.spec.replicas or 1)
            if rule.state == "failed":
                raise AbortRollout(f"{service} taking over {plan.version}: {rule.message}")
            runs = template_version(d.spec.template) == plan.version
            if runs and rule.state == "done":
                other = self.cluster.deployment_or_none(versioned)
                both = (d.status.ready_replicas or 0) + (
                    (other.status.ready_replicas or 0) if other is not None else 0
                )
                if self._routed(service, plan.version, both):
                    break
            self._check_pods(service, plan.version, d)
            if time.monotonic() - started >= budget:
                raise AbortRollout(
                    f"{service} did not take over {plan.version} within {budget:g}s "
                    f"({rule.message})"
                )
            await asyncio.sleep(self.cluster.poll_interval)
        self.cluster.delete_versioned(versioned)
        await self._wait_pods_gone(service, plan.version, versioned, 0, timeout)

    async def _wait_pods_gone(
        self, service: str, version: str, name: str, count: int, timeout: float
    ) -> None:
        """Until at most ``count`` pods of the Deployment exist, terminating ones included
        (they still finish their in-flight requests). A versioned Deployment's pods are found
        by its selector even once it is deleted."""
        labels = {NAME: service, VERSION: version}
        deadline = time.monotonic() + timeout
        while True:
            if name == service:
                labels = dict(self.cluster.deployment(service).spec.selector.match_labels)
            left = len(self.cluster.pods(labels))
            if left <= count:
                return
            if time.monotonic() >= deadline:
                raise AbortRollout(
                    f"{service} {version}: {left} pods still running after {timeout:g}s"
                )
            await asyncio.sleep(self.cluster.poll_interval)

    def _check_pods(self, service: str, version: str, deployment: Any) -> None:
        selector = dict(deployment.spec.selector.match_labels or {})
        for pod in self.cluster.pods(selector):
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                if waiting is not None and waiting.reason in HOPELESS:
                    name = pod.metadata.name
                    detail = waiting.message or (
                        f"kubectl -n {self.cluster.namespace} describe pod {name}"
                    )
                    raise AbortRollout(
                        f"{service} {version} cannot start: pod {name} is in "
                        f"{waiting.reason} ({detail})"
                    )

    # -- the gateway ---------------------------------------------------------------------------
    def _routed(self, service: str, version: str, count: int) -> bool:
        """Every serving gateway pod counts at least ``count`` instances of the version."""
        texts = self._scrape_gateways()
        if not texts:
            return False
        for text in texts.values():
            samples = promtext.parse(text)
            seen = promtext.total(samples, INSTANCES, upstream=service, upstream_version=version)
            if seen < count:
                return False
        return True

    def _scrape_gateways(self) -> dict[str, str]:
        """``/metrics`` of every ready gateway pod, through the API server's pod proxy; a pod
        that does not answer is left out (its last scrape stands in for it)."""
        out: dict[str, str] = {}
        gateway = self.cluster.gateway_name()
        namespace = self.cluster.namespace
        for pod in self.cluster.pods({NAME: gateway}):
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") != "True" or pod.metadata.deletion_timestamp is not None:
                continue
            port = _http_port(pod)
            path = f"/api/v1/namespaces/{namespace}/pods/{pod.metadata.name}:{port}/proxy/metrics"
            try:
                answer = self.cluster.kube.proxy_get(path)
            except RuntimeFailure:
                continue
            if answer.status == 200:
                out[pod.metadata.name] = answer.text
        return out

    async def gateway_metrics(self) -> str:
        # Each gateway pod counts only what it served: the canary's traffic is the sum over
        # all of them (the Service proxy would reach one pod at random per scrape).
        self._scrapes.update(self._scrape_gateways())
        return "\n".join(self._scrapes.values())

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        self._set_weights(service, weights)

    def smoke_path(self, service: str) -> str | None:
        annotations = self.cluster.deployment(service).metadata.annotations or {}
        if annotations.get(SMOKE_PATH):
            return str(annotations[SMOKE_PATH])
        try:  # the k8s manifests deploy the services of the default catalogue
            return load_platform(DEFAULT_PLATFORM).get(service).smoke_path
        except CatalogError:
            return None

    async def smoke(self, path: str, version: str) -> str | None:
        """One GET pinned to ``version`` through the gateway's Service, by the API server's
        service proxy (it forwards ``X-API-Key`` and ``X-Mesh-Version`` as they are)."""
        gateway = self.cluster.gateway_name()
        route, _, query = path.partition("?")
        proxy = (
            f"/api/v1/namespaces/{self.cluster.namespace}/services/"
            f"{gateway}:{GATEWAY_PORT_NAME}/proxy{route}"
        )
        headers = {"X-API-Key": self.api_key, "X-Mesh-Version": version}
        try:
            answer = self.cluster.kube.proxy_get(proxy, parse_qsl(query), headers)
        except RuntimeFailure as exc:
            return f"GET {path} failed: {exc}"
        if answer.status >= 500:
            return f"GET {path} answered {answer.status}"
        served = answer.headers.get("x-mesh-upstream-version")
        if served != version:
            return f"GET {path} was served by {served}, not {version} ({answer.status})"
        return None


def _http_port(pod: Any) -> int:
    for container in pod.spec.containers or []:
        for port in container.ports or []:
            if port.name == "http":
                return int(port.container_port)
    return 8080


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
