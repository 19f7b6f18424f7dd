"""A fake Kubernetes API server: real apps/v1, autoscaling/v2 and core/v1 response shapes, in a
thread.

The objects start from the project's own manifests (``k8s/base/apps``, the canary component,
the infrastructure StatefulSets) plus what the API server adds (namespace, uid,
resourceVersion, generation, defaults, status). Writes answer as the API server does: ``POST``
201 with the object (``status: {}``), ``PUT`` checked against the resourceVersion read (409
Conflict), ``DELETE`` a ``Status`` of ``Success`` with the deleted object's details, a selector
that does not match the template labels 422 Invalid.

Tiny controllers move one step per read of an object (or of the pods), the way a rollout
looks to a poller:

- a Deployment first has its new generation observed; then its newest ReplicaSet gets one pod
  more (not ready), that pod gets ready on the next read, and only then does an old ReplicaSet
  lose one (surge 1, unavailable 0), until the Progressing condition says
  NewReplicaSetAvailable. A Deployment in ``stuck`` stops after one new pod that never gets
  ready and reports ProgressDeadlineExceeded (``stuck_once``: only its next rollout does); the
  pods of one in ``crashing`` sit in CrashLoopBackOff.
- a StatefulSet gains or loses one pod per read, a new pod getting ready on the next one (one
  in ``stuck`` never changes).

The pod and service proxies answer for the gateway (:class:`FakeGateway`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import consul
import yaml
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from gateway.discovery import TRAFFIC_PREFIX, parse_weights
from gateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [
    ROOT / "k8s/base/apps/gateway.yaml",
    ROOT / "k8s/base/apps/orders.yaml",
    ROOT / "k8s/base/apps/payments.yaml",
    ROOT / "k8s/components/canary/orders-v2.yaml",
    ROOT / "k8s/base/infra/jaeger.yaml",
    ROOT / "k8s/base/infra/kafka/kafka.yaml",
    ROOT / "k8s/base/infra/redis.yaml",
    ROOT / "k8s/base/infra/consul/consul.yaml",
]
BLUEGREEN = ROOT / "k8s/components/bluegreen/payments-v2.yaml"
NS = "mesh"
STAMP = "2026-11-24T10:00:00Z"
REVISION = "deployment.kubernetes.io/revision"
NAME = "app.kubernetes.io/name"
API_KEY = "test-key"
Obj = dict[str, Any]
Answer = tuple[int, Obj | str, dict[str, str]]


_DOCS: dict[Path, list[Obj]] = {}


def manifests(path: Path) -> list[Obj]:
    """The documents of a manifest, parsed once per test run (each cluster copies them)."""
    if path not in _DOCS:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        _DOCS[path] = [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]
    return _DOCS[path]


def merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch, as far as the runtime uses it: maps merge, lists of named maps
    (containers, env) merge by name, other lists are replaced, ``None`` deletes."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value)
        return out
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in target + patch)
    ):
        out_list = [dict(i) for i in target]
        for item in patch:
            index = next((n for n, i in enumerate(out_list) if i["name"] == item["name"]), None)
            if index is None:
                out_list.append(item)
            else:
                out_list[index] = merge(out_list[index], item)
        return out_list
    return copy.deepcopy(patch)


def matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if key not in labels or ("=" in term and labels[key] != value):
            return False
    return True


def env_version(template: Obj) -> str:
    """What a pod of this template registers in Consul as ``Meta.version``."""
    for container in template["spec"]["containers"]:
        for env in container.get("env") or []:
            if env["name"] == "SERVICE_VERSION":
                return str(env["value"])
    return str(template["metadata"].get("labels", {}).get("mesh.demo/version", "v1"))


class FakeCluster:
    def __init__(
        self,
        replicas: dict[str, int] | None = None,
        consul_addr: str | None = None,
        extra: list[Path] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.version = 1000
        self.deployments: dict[str, Obj] = {}
        self.replicasets: dict[str, Obj] = {}
        self.hpas: dict[str, Obj] = {}
        self.statefulsets: dict[str, Obj] = {}
        self.stuck: set[str] = set()
        self.stuck_once: set[str] = set()
        self._stuck_generation: dict[str, int] = {}
        self.crashing: set[str] = set()
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content type, body
        self.deleted_pods: list[tuple[str, str | None]] = []
        # Ready pods per version of each service, every time they changed (oldest first).
        self.ready_log: dict[str, list[dict[str, int]]] = {}
        counts = {
            "gateway": 2,
            "orders": 3,
            "payments": 2,
            "orders-v2": 1,
            "payments-v2": 2,
            "jaeger": 1,
            **(replicas or {}),
        }
        for path in [*MANIFESTS, *(extra or [])]:
            for doc in manifests(path):
                if doc["kind"] == "Deployment":
                    self._add_deployment(doc, counts[doc["metadata"]["name"]])
                elif doc["kind"] == "HorizontalPodAutoscaler":
                    self._add_hpa(doc)
                elif doc["kind"] == "StatefulSet":
                    self._add_statefulset(doc)
        self._log_ready()
        self.gateway = FakeGateway(self, consul_addr)

    # -- objects -------------------------------------------------------------------------------
    def _meta(self, meta: Obj) -> Obj:
        self.version += 1
        name = meta["name"]
        return {
            **meta,
            "namespace": NS,
            "uid": hashlib.md5(f"{name}-{self.version}".encode()).hexdigest(),
            "resourceVersion": str(self.version),
            "creationTimestamp": STAMP,
        }

    def _add_deployment(self, doc: Obj, replicas: int) -> None:
        d = copy.deepcopy(doc)
        d["metadata"] = self._meta(d["metadata"]) | {"generation": 1}
        d["metadata"].setdefault("annotations", {})[REVISION] = "1"
        d["spec"] = {"replicas": replicas, "progressDeadlineSeconds": 600, **d["spec"]}
        d["spec"]["replicas"] = replicas
        d["status"] = {"observedGeneration": 1}
        self.deployments[d["metadata"]["name"]] = d
        rs = self._replicaset(d, revision=1)
        self._rs_set(rs, replicas, replicas)
        self._sync(d, done=True)

    def _add_hpa(self, doc: Obj) -> None:
        h = copy.deepcopy(doc)
        h["metadata"] = self._meta(h["metadata"])
        target = h["spec"]["scaleTargetRef"]["name"]
        current = self.deployments[target]["spec"]["replicas"]
        h["status"] = {
            "observedGeneration": 1,
            "lastScaleTime": "2026-11-24T10:05:00Z",
            "currentReplicas": current,
            "desiredReplicas": current,
            "currentMetrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "current": {"averageValue": "35m", "averageUtilization": 35},
                    },
                }
            ],
            "conditions": [
                _cond("AbleToScale", "True", "ReadyForNewScale", "recommended size matches"),
                _cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to compute"),
                _cond("ScalingLimited", "False", "DesiredWithinRange", "within range"),
            ],
        }
        self.hpas[h["metadata"]["name"]] = h

    def _add_statefulset(self, doc: Obj) -> None:
        s = copy.deepcopy(doc)
        s["metadata"] = self._meta(s["metadata"]) | {"generation": 1}
        s["spec"].setdefault("replicas", 1)
        s["spec"].setdefault(
            "persistentVolumeClaimRetentionPolicy",
            {"whenDeleted": "Retain", "whenScaled": "Retain"},
        )
        s["status"] = {"observedGeneration": 1}
        self._sts_set(s, s["spec"]["replicas"], s["spec"]["replicas"])
        self.statefulsets[s["metadata"]["name"]] = s

    def _replicaset(self, d: Obj, revision: int) -> Obj:
        template = copy.deepcopy(d["spec"]["template"])
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{d['metadata']['name']}-{digest}"
        if name in self.replicasets:
            return self.replicasets[name]
        template["metadata"]["labels"]["pod-template-hash"] = digest
        rs = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": self._meta(
                {
                    "name": name,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {REVISION: str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": d["metadata"]["name"],
                            "uid": d["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                }
            )
            | {"generation": 1},
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {
                        **d["spec"]["selector"]["matchLabels"],
                        "pod-template-hash": digest,
                    }
                },
                "template": template,
            },
            "status": {"replicas": 0, "observedGeneration": 1},
        }
        self.replicasets[name] = rs
        return rs

    def _owned(self, d: Obj) -> list[Obj]:
        uid = d["metadata"]["uid"]
        return [
            rs
            for rs in self.replicasets.values()
            if rs["metadata"]["ownerReferences"][0]["uid"] == uid
        ]

    def _current_rs(self, d: Obj) -> Obj:
        return self._replicaset(d, revision=0)  # found by its template hash

    @staticmethod
    def _rs_set(rs: Obj, replicas: int, ready: int) -> None:
        """The ReplicaSet's count and its status (zero counts omitted, as the API does)."""
        rs["spec"]["replicas"] = replicas
        status: Obj = {"replicas": replicas, "observedGeneration": rs["metadata"]["generation"]}
        if replicas:
            status["fullyLabeledReplicas"] = replicas
        if ready:
            status["readyReplicas"] = status["availableReplicas"] = ready
        rs["status"] = status

    def _reason(self, d: Obj) -> str | None:
        conditions = d["status"].get("conditions") or []
        progressing = [c for c in conditions if c["type"] == "Progressing"]
        return progressing[0].get("reason") if progressing else None

    def _sync(self, d: Obj, done: bool, deadline: bool = False) -> None:
        """The Deployment's status from its ReplicaSets."""
        new = self._current_rs(d)
        owned = self._owned(d)
        total = sum(rs["status"]["replicas"] for rs in owned)
        updated = new["status"]["replicas"]
        available = sum(rs["status"].get("availableReplicas", 0) for rs in owned)
        rs_name = new["metadata"]["name"]
        if deadline:
            progressing = _cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        elif done:
            progressing = _cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = _cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
        enough = available >= d["spec"]["replicas"] or available > 0
        status: Obj = {
            "observedGeneration": d["status"].get("observedGeneration", 0),
            "conditions": [
                _cond(
                    "Available",
                    "True" if enough else "False",
                    "MinimumReplicasAvailable" if enough else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if enough
                    else "Deployment does not have minimum availability.",
                ),
                progressing,
            ],
        }
        for key, value in (
            ("replicas", total),
            ("updatedReplicas", updated),
            ("readyReplicas", available),
            ("availableReplicas", available),
            ("unavailableReplicas", total - available),
        ):
            if value > 0:
                status[key] = value
        d["status"] = status
        self._log_ready()

    def _log_ready(self) -> None:
        ready: dict[str, dict[str, int]] = {}
        for rs in self.replicasets.values():
            service = rs["metadata"]["labels"].get(NAME, "")
            count = rs["status"].get("readyReplicas", 0)
            if count:
                version = env_version(rs["spec"]["template"])
                per = ready.setdefault(service, {})
                per[version] = per.get(version, 0) + count
        for service in {*ready, *self.ready_log}:
            now = ready.get(service, {})
            log = self.ready_log.setdefault(service, [])
            if not log or log[-1] != now:
                log.append(now)

    # -- the controllers: one step per read ----------------------------------------------------
    def _is_stuck(self, d: Obj) -> bool:
        name, generation = d["metadata"]["name"], d["metadata"]["generation"]
        if name in self.stuck:
            return True
        if name in self.stuck_once:
            return self._stuck_generation.setdefault(name, generation) == generation
        return False

    def step(self, d: Obj) -> None:
        status, generation = d["status"], d["metadata"]["generation"]
        if status.get("observedGeneration", 0) < generation:
            status["observedGeneration"] = generation
            d["metadata"].setdefault("annotations", {}).setdefault(REVISION, "1")
            self._sync(d, done=False)
            return
        if self._reason(d) in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded"):
            return
        new = self._current_rs(d)
        old = [rs for rs in self._owned(d) if rs is not new and rs["spec"]["replicas"]]
        desired = d["spec"]["replicas"]
        have = new["spec"]["replicas"]
        ready = new["status"].get("readyReplicas", 0)
        stuck = self._is_stuck(d)
        if stuck and have >= 1:
            self._sync(d, done=False, deadline=True)
            return
        blocked = stuck or d["metadata"]["name"] in self.crashing
        total = have + sum(rs["spec"]["replicas"] for rs in old)
        if ready < have and not blocked:
            self._rs_set(new, have, ready + 1)
        elif have > desired:  # scaling down: the extra pods go at once
            self._rs_set(new, desired, min(ready, desired))
        elif old and total > desired:
            if ready == have:  # unavailable 0: an old pod goes once the new ones are ready
                oldest = old[0]
                count = oldest["spec"]["replicas"] - 1
                self._rs_set(oldest, count, min(oldest["status"].get("readyReplicas", 0), count))
        elif have < desired and (not old or total <= desired):
            self._rs_set(new, have + 1, ready)
        have, ready = new["spec"]["replicas"], new["status"].get("readyReplicas", 0)
        left = any(rs["spec"]["replicas"] for rs in old)
        self._sync(d, done=not left and have == desired == ready)

    def step_statefulset(self, s: Obj) -> None:
        status, generation = s["status"], s["metadata"]["generation"]
        if status.get("observedGeneration", 0) < generation:
            status["observedGeneration"] = generation
            return
        if s["metadata"]["name"] in self.stuck:  # say, no node has room for its pods
            return
        want = s["spec"]["replicas"]
        have, ready = status["replicas"], status.get("readyReplicas", 0)
        if have > want:  # the highest ordinal goes first
            have -= 1
            ready = min(ready, have)
        elif ready < have:
            ready += 1
        elif have < want:
            have += 1
        else:
            return
        self._sts_set(s, have, ready)

    @staticmethod
    def _sts_set(s: Obj, have: int, ready: int) -> None:
        revision = f"{s['metadata']['name']}-5d4f8c7b9"
        status: Obj = {
            "observedGeneration": s["status"].get("observedGeneration", 0),
            "replicas": have,
            "availableReplicas": ready,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        if ready:
            status["readyReplicas"] = ready
        if have:
            status["currentReplicas"] = status["updatedReplicas"] = have
        s["status"] = status

    # -- requests ------------------------------------------------------------------------------
    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        apps = f"/apis/apps/v1/namespaces/{NS}"
        hpa = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
        pods = f"/api/v1/namespaces/{NS}/pods"
        services = f"/api/v1/namespaces/{NS}/services"
        selector = query.get("labelSelector")
        if m := re.fullmatch(f"{apps}/deployments(?:/([^/]+))?(/scale)?", path):
            return self._deployment_request(method, m.group(1), bool(m.group(2)), body, selector)
        if m := re.fullmatch(f"{apps}/statefulsets(?:/([^/]+))?(/scale)?", path):
            return self._statefulset_request(method, m.group(1), bool(m.group(2)), body, selector)
        if path == f"{apps}/replicasets":
            items = [
                r for r in self.replicasets.values() if matches(r["metadata"]["labels"], selector)
            ]
            return 200, _list("ReplicaSetList", "apps/v1", items), {}
        if m := re.fullmatch(f"{hpa}(?:/([^/]+))?", path):
            if m.group(1) is None:
                items = list(self.hpas.values())
                return 200, _list("HorizontalPodAutoscalerList", "autoscaling/v2", items), {}
            if m.group(1) not in self.hpas:
                return _not_found("horizontalpodautoscalers.autoscaling", m.group(1))
            h = self.hpas[m.group(1)]
            if method == "DELETE":
                del self.hpas[m.group(1)]
                return _deleted("autoscaling", "horizontalpodautoscalers", h)
            if method == "PATCH":
                h.update(merge(h, body))
                h["metadata"]["generation"] = h["metadata"].get("generation", 1) + 1
            return 200, copy.deepcopy(h), {}
        if m := re.fullmatch(rf"{pods}/([^/:]+):(\d+)/proxy/(.*)", path):
            return self._pod_proxy(m.group(1), int(m.group(2)), m.group(3))
        if m := re.fullmatch(rf"{services}/([^/:]+)(?::([^/]+))?/proxy(/.*)?", path):
            return self._service_proxy(m.group(1), m.group(2), m.group(3) or "/", headers or {})
        if m := re.fullmatch(f"{pods}(?:/([^/]+))?", path):
            # Watching pods is watching the controllers work too.
            for d in list(self.deployments.values()):
                self.step(d)
            for s in self.statefulsets.values():
                self.step_statefulset(s)
            all_pods = self.pods()
            if m.group(1) is None:
                items = [p for p in all_pods if matches(p["metadata"]["labels"], selector)]
                return 200, _list("PodList", "v1", items), {}
            pod = next((p for p in all_pods if p["metadata"]["name"] == m.group(1)), None)
            if pod is None:
                return _not_found("pods", m.group(1))
            if method == "DELETE":
                self.deleted_pods.append((m.group(1), query.get("gracePeriodSeconds")))
            return 200, pod, {}
        return _status(404, "NotFound", "the server could not find the requested resource")

    def _deployment_request(
        self, method: str, name: str | None, scale: bool, body: Any, selector: str | None
    ) -> Answer:
        if name is None and method == "POST":
            return self._create(body)
        if name is None:
            items = [
                d for d in self.deployments.values() if matches(d["metadata"]["labels"], selector)
            ]
            for d in items:
                self.step(d)
            return 200, _list("DeploymentList", "apps/v1", items), {}
        if name not in self.deployments:
            return _not_found("deployments.apps", name)
        d = self.deployments[name]
        if scale and method == "PATCH":
            if d["spec"]["replicas"] != body["spec"]["replicas"]:
                d["spec"]["replicas"] = body["spec"]["replicas"]
                self._bump(d)
        elif scale:
            pass
        elif method == "PATCH":
            before = json.dumps(d["spec"], sort_keys=True)
            patched = merge(d, body)
            d.clear()
            d.update(patched)
            self._changed(d, before)
            return 200, copy.deepcopy(d), {}
        elif method == "PUT":
            return self._replace(d, body)
        elif method == "DELETE":
            for rs in self._owned(d):
                del self.replicasets[rs["metadata"]["name"]]
            del self.deployments[name]
            self._log_ready()
            return _deleted("apps", "deployments", d)
        else:
            response = copy.deepcopy(d)
            self.step(d)
            return 200, response, {}
        return 200, self._scale(d, d["status"].get("replicas", 0)), {}

    def _create(self, body: Obj) -> Answer:
        name = body["metadata"]["name"]
        if name in self.deployments:
            return _status(
                409,
                "AlreadyExists",
                f'deployments.apps "{name}" already exists',
                {"name": name, "group": "apps", "kind": "deployments"},
            )
        invalid = _invalid_selector(body)
        if invalid is not None:
            return invalid
        d = copy.deepcopy(body)
        d["metadata"] = self._meta(d["metadata"]) | {"generation": 1}
        d["spec"] = {
            "replicas": 1,
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            **d["spec"],
        }
        d["status"] = {}
        self.deployments[name] = d
        return 201, copy.deepcopy(d), {}

    def _replace(self, d: Obj, body: Obj) -> Answer:
        name = d["metadata"]["name"]
        if body["metadata"].get("resourceVersion") != d["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": "apps", "kind": "deployments"},
            )
        if body["spec"]["selector"] != d["spec"]["selector"]:
            return _status(
                422,
                "Invalid",
                f'Deployment.apps "{name}" is invalid: spec.selector: Invalid value: '
                f"{json.dumps(body['spec']['selector'])}: field is immutable",
                {"name": name, "group": "apps", "kind": "Deployment"},
            )
        invalid = _invalid_selector(body)
        if invalid is not None:
            return invalid
        before = json.dumps(d["spec"], sort_keys=True)
        for key in ("labels", "annotations"):
            d["metadata"][key] = body["metadata"].get(key) or {}
        d["metadata"]["annotations"].setdefault(REVISION, "1")
        d["spec"] = copy.deepcopy(body["spec"])
        self._changed(d, before)
        return 200, copy.deepcopy(d), {}

    def _changed(self, d: Obj, before: str) -> None:
        if json.dumps(d["spec"], sort_keys=True) == before:
            return
        self._bump(d)
        annotations = d["metadata"].setdefault("annotations", {})
        revision = int(annotations.get(REVISION, "1")) + 1
        annotations[REVISION] = str(revision)
        self._replicaset(d, revision)

    def _statefulset_request(
        self, method: str, name: str | None, scale: bool, body: Any, selector: str | None
    ) -> Answer:
        if name is None:
            items = [
                s for s in self.statefulsets.values() if matches(s["metadata"]["labels"], selector)
            ]
            for s in items:
                self.step_statefulset(s)
            return 200, _list("StatefulSetList", "apps/v1", items), {}
        if name not in self.statefulsets:
            return _not_found("statefulsets.apps", name)
        s = self.statefulsets[name]
        if scale:
            if method == "PATCH" and s["spec"]["replicas"] != body["spec"]["replicas"]:
                s["spec"]["replicas"] = body["spec"]["replicas"]
                self._bump(s)
            return 200, self._scale(s, s["status"]["replicas"]), {}
        if method == "PATCH":
            before = json.dumps(s["spec"], sort_keys=True)
            s.update(merge(s, body))
            if json.dumps(s["spec"], sort_keys=True) != before:
                self._bump(s)
            else:
                self.version += 1
                s["metadata"]["resourceVersion"] = str(self.version)
            return 200, copy.deepcopy(s), {}
        response = copy.deepcopy(s)
        self.step_statefulset(s)
        return 200, response, {}

    def _pod_proxy(self, name: str, port: int, rest: str) -> Answer:
        pod = next((p for p in self.pods() if p["metadata"]["name"] == name), None)
        if pod is None:
            return _not_found("pods", name)
        if port != 8080:
            return _status(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {pod['status']['podIP']}:{port}: "
                "connect: connection refused",
            )
        if pod["metadata"]["labels"].get(NAME) == "gateway" and rest == "metrics":
            return 200, self.gateway.metrics(name), {"Content-Type": _PROM}
        return 404, "404: Not Found", {"Content-Type": "text/plain; charset=utf-8"}

    def _service_proxy(
        self, name: str, port: str | None, rest: str, headers: dict[str, str]
    ) -> Answer:
        if name == "gateway" and port in (None, "http", "8080"):
            return self.gateway.request(rest, headers)
        return _status(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')

    def _bump(self, o: Obj) -> None:
        o["metadata"]["generation"] += 1
        self.version += 1
        o["metadata"]["resourceVersion"] = str(self.version)

    @staticmethod
    def _scale(o: Obj, running: int) -> Obj:
        labels = o["spec"]["selector"]["matchLabels"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: o["metadata"][k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": o["spec"]["replicas"]},
            "status": {
                "replicas": running,
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    def pods(self) -> list[Obj]:
        out: list[Obj] = []
        owners: list[tuple[str, Obj, int, int, bool]] = []
        for rs in self.replicasets.values():
            owner = rs["metadata"]["ownerReferences"][0]["name"]
            status = rs["status"]
            owners.append(
                (
                    rs["metadata"]["name"] + "-p",
                    rs["spec"]["template"],
                    status["replicas"],
                    status.get("readyReplicas", 0),
                    owner in self.crashing,
                )
            )
        for s in self.statefulsets.values():
            status = s["status"]
            template = s["spec"]["template"]
            owners.append(
                (
                    s["metadata"]["name"] + "-",
                    template,
                    status["replicas"],
                    status.get("readyReplicas", 0),
                    False,
                )
            )
        for prefix, template, count, ready, crashing in owners:
            for i in range(count):
                name = f"{prefix}{i}"
                out.append(_pod(name, template, i < ready, crashing, len(out), self.version))
        return out


def _pod(name: str, template: Obj, ready: bool, crashing: bool, index: int, rv: int) -> Obj:
    container = template["spec"]["containers"][0]
    if crashing:
        state: Obj = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 40s restarting failed container={container['name']} "
                f"pod={name}_{NS}(0f9c8d1e-4b2a-4c6e-9a51-3f7e2d1c0b9a)",
            }
        }
        last: Obj = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": STAMP,
                "finishedAt": STAMP,
                "containerID": "containerd://" + "1" * 64,
            }
        }
    else:
        state, last = {"running": {"startedAt": STAMP}}, {}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": hashlib.md5(name.encode()).hexdigest(),
            "resourceVersion": str(rv),
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"].get("annotations", {}),
        },
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "podIP": f"10.0.0.{index + 10}",
            "startTime": STAMP,
            "conditions": [_cond("Ready", "True" if ready else "False", None, None)],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "sha256:" + "0" * 64,
                    "ready": ready,
                    "started": ready or not crashing,
                    "restartCount": 0 if ready else 2,
                    "state": state,
                    "lastState": last,
                }
            ],
        },
    }


ROUTES = {
    "orders": "/api/orders",
    "payments": "/api/payments",
    "inventory": "/api/stock",
    "notifications": "/api/notifications",
}
_PROM = "text/plain; version=0.0.4; charset=utf-8"


class FakeGateway:
    """The gateway behind the pod and service proxies: each pod has the real gateway's series
    (:class:`gateway.metrics.GatewayMetrics` and ``gateway_upstream_instances``), and routes by
    the weights it reads from Consul KV over the ready pods of each version (their
    ``SERVICE_VERSION``), falling back to whatever version has instances as the real balancer
    does. Each scrape of a pod first serves ``traffic[service]`` requests through that pod;
    ``errors[(service, version)]`` is the share of them that version answers 500."""

    def __init__(self, cluster: FakeCluster, consul_addr: str | None) -> None:
        self.cluster = cluster
        self.kv: consul.Consul | None = None
        if consul_addr:
            host, port = consul_addr.removeprefix("http://").split(":")
            self.kv = consul.Consul(host=host, port=int(port))
        self.traffic: dict[str, int] = {}
        self.errors: dict[tuple[str, str], float] = {}
        self.pods: dict[str, tuple[CollectorRegistry, GatewayMetrics, Gauge]] = {}
        self.weights_seen: dict[str, list[dict[str, int] | None]] = {}
        self.served: dict[tuple[str, str], int] = {}
        self.unroutable: dict[str, int] = {}
        self.smokes: list[tuple[str, dict[str, str]]] = []
        # (service, version) whose instances this gateway does not see (its Consul watch lags).
        self.blind: set[tuple[str, str]] = set()

    def instances(self, service: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for pod in self.cluster.pods():
            ready = pod["status"]["conditions"][0]["status"] == "True"
            version = env_version(pod)
            seen = (service, version) not in self.blind
            if pod["metadata"]["labels"].get(NAME) == service and ready and seen:
                out[version] = out.get(version, 0) + 1
        return out

    def weights(self, service: str) -> dict[str, int] | None:
        if self.kv is None:
            return None
        _, entry = self.kv.kv.get(TRAFFIC_PREFIX + service)
        weights = parse_weights(entry["Value"]) if entry else None
        seen = self.weights_seen.setdefault(service, [])
        if not seen or seen[-1] != weights:
            seen.append(weights)
        return weights

    def _serve(self, metrics: GatewayMetrics, service: str, count: int) -> None:
        present = self.instances(service)
        weights = self.weights(service) or {}
        live = {v: w for v, w in weights.items() if w > 0 and v in present} or present
        if not live:
            self.unroutable[service] = self.unroutable.get(service, 0) + count
            return
        total = sum(live.values())
        shares = {v: count * w // total for v, w in live.items()}
        shares[max(live, key=lambda v: live[v])] += count - sum(shares.values())
        route = ROUTES[service]
        for version, n in shares.items():
            failed = round(n * self.errors.get((service, version), 0.0))
            metrics.requests.labels(route, service, version, "500").inc(failed)
            metrics.requests.labels(route, service, version, "200").inc(n - failed)
            for _ in range(n):
                metrics.latency.labels(route, service, version).observe(0.02)
            key = (service, version)
            self.served[key] = self.served.get(key, 0) + n

    def metrics(self, pod: str) -> str:
        if pod not in self.pods:
            registry = CollectorRegistry()
            instances = Gauge(
                "gateway_upstream_instances",
                "Passing instances known to the gateway.",
                ("upstream", "upstream_version"),
                registry=registry,
            )
            self.pods[pod] = (registry, GatewayMetrics(registry), instances)
        registry, metrics, instances = self.pods[pod]
        for service, count in self.traffic.items():
            self._serve(metrics, service, count)
        instances.clear()
        for service in ROUTES:
            for version, n in self.instances(service).items():
                instances.labels(service, version).set(n)
        return generate_latest(registry).decode()

    def request(self, path: str, headers: dict[str, str]) -> Answer:
        """A request through the gateway's Service (the smoke check)."""
        self.smokes.append((path, dict(headers)))
        service = next((s for s, route in ROUTES.items() if path.startswith(route)), None)
        if headers.get("x-api-key") != API_KEY:
            return _error(401, "unauthorized", "missing or unknown API key")
        if service is None:
            return _error(404, "not_found", f"no route for {path}")
        pinned = headers.get("x-mesh-version")
        present = self.instances(service)
        version = pinned or max(present, key=lambda v: present[v], default=None)
        if version is None or not present.get(version):
            code, status, message = _error(503, "unavailable", f"no healthy {service} instance")
            return code, status, {**message, "Retry-After": "1"}
        if self.errors.get((service, version), 0.0) >= 1.0:
            code, status, answer = _error(500, "internal", "upstream failed")
            return code, status, {**answer, "X-Mesh-Upstream-Version": version}
        body = json.dumps({"items": [], "service": service})
        return 200, body, {"Content-Type": "application/json", "X-Mesh-Upstream-Version": version}


def _error(code: int, kind: str, message: str) -> Answer:
    body = json.dumps({"error": {"code": kind, "message": message}})
    return code, body, {"Content-Type": "application/json"}


def _invalid_selector(body: Obj) -> Answer | None:
    selector = body["spec"]["selector"].get("matchLabels", {})
    labels = body["spec"]["template"]["metadata"].get("labels", {})
    if all(labels.get(k) == v for k, v in selector.items()):
        return None
    name = body["metadata"]["name"]
    message = f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"
    return _status(
        422,
        "Invalid",
        f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: {message}',
        {
            "name": name,
            "group": "apps",
            "kind": "Deployment",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": message,
                    "field": "spec.template.metadata.labels",
                }
            ],
        },
    )


def _cond(kind: str, status: str, reason: str | None, message: str | None) -> Obj:
    out: Obj = {"type": kind, "status": status, "lastTransitionTime": STAMP}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def _list(kind: str, api_version: str, items: list[Obj]) -> Obj:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": "5000"},
        "items": copy.deepcopy(items),
    }


def _status(code: int, reason: str, message: str, details: Obj | None = None) -> Answer:
    doc: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        doc["details"] = details
    return code, doc, {}


def _not_found(resource: str, name: str) -> Answer:
    return _status(
        404,
        "NotFound",
        f'{resource} "{name}" not found',
        {"name": name, "kind": resource.split(".")[0]},
    )


def _deleted(group: str, resource: str, o: Obj) -> Answer:
    """What the API server answers for an object deleted at once (no finalizers left)."""
    details = {
        "name": o["metadata"]["name"],
        "group": group,
        "kind": resource,  # the resource, not the kind: the API server does it this way
        "uid": o["metadata"]["uid"],
    }
    return (
        200,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        },
        {},
    )


class FakeApiServer:
    """``with FakeApiServer() as api: ... api.url ... api.cluster``"""

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster or FakeCluster()
        cluster_ref = self.cluster

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                kind = self.headers.get("Content-Type", "")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with cluster_ref.lock:
                    cluster_ref.requests.append((self.command, self.path, kind, body))
                    code, doc, extra = cluster_ref.handle(
                        self.command, parts.path, query, body, headers
                    )
                if isinstance(doc, str):
                    data = doc.encode()
                    extra = {"Content-Type": "text/plain; charset=utf-8", **extra}
                else:
                    data = json.dumps(doc).encode()
                    extra = {"Content-Type": "application/json", **extra}
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
