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
from fake_patches import PatchError, apply_patch
from fake_websocket import serve_exec
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
KEDA_SCALED_OBJECTS = ROOT / "k8s/components/keda/scaledobjects.yaml"
KEDA_PAUSED = "autoscaling.keda.sh/paused-replicas"
NS = "mesh"
STAMP = "2026-11-24T10:00:00Z"
TERMINATING_READS = 3  # reads of the pods a gracefully deleted pod stays Terminating
RECOVER_READS = 3  # reads a replacement (or restarted) pod takes to get ready
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
        docs = [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]
        for doc in docs:  # what the base's kustomize `labels` add to every object
            doc["metadata"].setdefault("labels", {})["app.kubernetes.io/part-of"] = "mesh-demo"
        _DOCS[path] = docs
    return _DOCS[path]


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
        *,
        keda: bool = False,
        metrics_server: bool = True,
        nodes: list[Obj] | None = None,
        storage_class: bool = True,
    ) -> None:
        """``keda``: the keda component is applied (ScaledObjects for the Kafka consumers
        here, their CPU HPAs gone) and KEDA's operator runs. ``metrics_server``: whether the
        resource metrics API is served (the CPU HPAs can read their metric). ``nodes``: the
        Node objects (default: one schedulable node, as a fresh kind cluster has)."""
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
        # Pods: the names each ReplicaSet or StatefulSet runs, in order; pods gracefully
        # deleted and still terminating (doc, reads left); pods not ready for a few reads
        # (just created to replace one, or their container restarted); restarts per pod.
        self.pod_names: dict[str, list[str]] = {}
        self.pod_serial = 0
        self.terminating: dict[str, tuple[Obj, int]] = {}
        self.recovering: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.execs: list[tuple[str, str, list[str]]] = []  # pod, container, command
        self.metrics_server = metrics_server
        self.nodes = nodes if nodes is not None else [node("kind-control-plane")]
        self.scaled_objects: dict[str, Obj] = {}
        self.keda_installed = keda
        self.storage_class = storage_class
        self.jobs: dict[str, Obj] = {}
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
        if keda:
            self._add_keda()
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
            "conditions": _hpa_conditions(self.metrics_server),
        }
        if not self.metrics_server:
            del h["status"]["currentMetrics"]
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
        available = sum(self._shown_ready(rs) for rs in owned)
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

    # -- KEDA: ScaledObjects, the HPAs its operator makes, its admission webhook ---------------
    def _add_keda(self) -> None:
        """The keda component: a ScaledObject per Kafka consumer present, carrying over its
        CPU HPA's size, which goes."""
        for doc in manifests(KEDA_SCALED_OBJECTS):
            target = doc["spec"]["scaleTargetRef"]["name"]
            if target not in self.deployments:
                continue
            so = copy.deepcopy(doc)
            so["metadata"] = self._meta(so["metadata"]) | {"generation": 1}
            for name, h in list(self.hpas.items()):
                if h["spec"]["scaleTargetRef"]["name"] == target:
                    so["spec"]["minReplicaCount"] = h["spec"].get("minReplicas", 1)
                    so["spec"]["maxReplicaCount"] = h["spec"]["maxReplicas"]
                    del self.hpas[name]
            so["status"] = {}
            self.scaled_objects[so["metadata"]["name"]] = so
        self.reconcile_keda()

    def _keda_hpa_spec(self, so: Obj) -> Obj:
        spec = so["spec"]
        metrics: list[Obj] = []
        for i, trigger in enumerate(spec.get("triggers") or []):
            meta = trigger.get("metadata") or {}
            if trigger["type"] == "kafka":
                metrics.append(
                    {
                        "type": "External",
                        "external": {
                            "metric": {
                                "name": f"s{i}-kafka-{meta['topic'].replace('.', '-')}",
                                "selector": {
                                    "matchLabels": {
                                        "scaledobject.keda.sh/name": so["metadata"]["name"]
                                    }
                                },
                            },
                            "target": {
                                "type": "AverageValue",
                                "averageValue": meta["lagThreshold"],
                            },
                        },
                    }
                )
            elif trigger["type"] == "cpu":
                metrics.append(
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": int(meta["value"]),
                            },
                        },
                    }
                )
        out: Obj = {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                **spec["scaleTargetRef"],
            },
            "minReplicas": max(1, int(spec.get("minReplicaCount", 0))),
            "maxReplicas": int(spec.get("maxReplicaCount", 100)),
            "metrics": metrics,
        }
        behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get(
            "behavior"
        )
        if behavior:
            out["behavior"] = copy.deepcopy(behavior)
        return out

    def reconcile_keda(self) -> None:
        """KEDA's operator: the HPA of each ScaledObject is what the ScaledObject says (edits to
        the HPA are undone); a paused ScaledObject has no HPA and its Deployment runs the
        paused count."""
        for so in self.scaled_objects.values():
            name = so["metadata"]["name"]
            hpa_name = f"keda-hpa-{name}"
            target = so["spec"]["scaleTargetRef"]["name"]
            paused = (so["metadata"].get("annotations") or {}).get(KEDA_PAUSED)
            if paused is not None:
                self.hpas.pop(hpa_name, None)
                d = self.deployments.get(target)
                if d is not None and d["spec"]["replicas"] != int(paused):
                    d["spec"]["replicas"] = int(paused)
                    self._bump(d)
                so["status"] = {"conditions": [_cond("Paused", "True", "ScaledObjectPaused", None)]}
                continue
            want = self._keda_hpa_spec(so)
            have = self.hpas.get(hpa_name)
            if have is None:
                doc = {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {
                        "name": hpa_name,
                        "labels": {
                            "app.kubernetes.io/managed-by": "keda-operator",
                            "app.kubernetes.io/name": hpa_name,
                            "app.kubernetes.io/part-of": name,
                            "scaledobject.keda.sh/name": name,
                        },
                        "ownerReferences": [
                            {
                                "apiVersion": "keda.sh/v1alpha1",
                                "kind": "ScaledObject",
                                "name": name,
                                "uid": so["metadata"]["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": want,
                }
                self._add_hpa(doc)
            elif have["spec"] != want:
                have["spec"] = want
                have["metadata"]["generation"] = have["metadata"].get("generation", 1) + 1
            so["status"] = {
                "hpaName": hpa_name,
                "conditions": [_cond("Ready", "True", "ScaledObjectReady", None)],
            }

    def _scaled_object_request(
        self, method: str, name: str | None, body: Any, ctype: str
    ) -> Answer:
        if not self.keda_installed:  # no CRD: the API server serves no such resource
            return _status(404, "NotFound", "the server could not find the requested resource")
        if name is None and method == "POST":
            return self._create_scaled_object(body)
        if name is None:
            items = list(self.scaled_objects.values())
            return 200, _list("ScaledObjectList", "keda.sh/v1alpha1", items), {}
        if name not in self.scaled_objects:
            return _not_found("scaledobjects.keda.sh", name)
        so = self.scaled_objects[name]
        if method == "PATCH":
            patched = apply_patch(so, body, ctype, custom=True)
            so.clear()
            so.update(patched)
            so["metadata"]["generation"] += 1
            self.version += 1
            so["metadata"]["resourceVersion"] = str(self.version)
            self.reconcile_keda()
        elif method == "DELETE":
            del self.scaled_objects[name]
            self.hpas.pop(f"keda-hpa-{name}", None)  # garbage-collected with its owner
            return _deleted("keda.sh", "scaledobjects", so)
        return 200, copy.deepcopy(so), {}

    def _create_scaled_object(self, body: Obj) -> Answer:
        """KEDA's validating webhook first: one autoscaler per workload."""
        name = body["metadata"]["name"]
        target = body["spec"]["scaleTargetRef"]["name"]
        for other in self.scaled_objects.values():
            if other["spec"]["scaleTargetRef"]["name"] == target:
                return _denied(target, f"ScaledObject '{other['metadata']['name']}'")
        for hpa_name, h in self.hpas.items():
            owners = h["metadata"].get("ownerReferences") or []
            if h["spec"]["scaleTargetRef"]["name"] == target and not any(
                o["kind"] == "ScaledObject" and o["name"] == name for o in owners
            ):
                return _denied(target, f"hpa '{hpa_name}'")
        so = copy.deepcopy(body)
        so["metadata"] = self._meta(so["metadata"]) | {"generation": 1}
        so["status"] = {}
        self.scaled_objects[name] = so
        self.reconcile_keda()
        return 201, copy.deepcopy(so), {}

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
        try:
            return self._route(method, path, query, body, headers or {})
        except PatchError as exc:
            return _status(exc.code, exc.reason, exc.message)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, headers: dict[str, str]
    ) -> Answer:
        apps = f"/apis/apps/v1/namespaces/{NS}"
        hpa = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
        keda = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects"
        pods = f"/api/v1/namespaces/{NS}/pods"
        services = f"/api/v1/namespaces/{NS}/services"
        selector = query.get("labelSelector")
        ctype = headers.get("content-type", "")
        self.reconcile_keda()
        if m := re.fullmatch(f"{apps}/deployments(?:/([^/]+))?(/scale)?", path):
            return self._deployment_request(
                method, m.group(1), bool(m.group(2)), body, selector, ctype
            )
        if m := re.fullmatch(f"{apps}/statefulsets(?:/([^/]+))?(/scale)?", path):
            return self._statefulset_request(
                method, m.group(1), bool(m.group(2)), body, selector, ctype
            )
        if path == f"{apps}/replicasets":
            items = [
                r for r in self.replicasets.values() if matches(r["metadata"]["labels"], selector)
            ]
            return 200, _list("ReplicaSetList", "apps/v1", items), {}
        if m := re.fullmatch(f"{hpa}(?:/([^/]+))?", path):
            return self._hpa_request(method, m.group(1), body, ctype)
        if m := re.fullmatch(f"{keda}(?:/([^/]+))?", path):
            return self._scaled_object_request(method, m.group(1), body, ctype)
        if path == "/api/v1/nodes":
            return 200, _list("NodeList", "v1", self.nodes), {}
        if path == "/apis/storage.k8s.io/v1/storageclasses":
            classes = [storage_class("standard")] if self.storage_class else []
            return 200, _list("StorageClassList", "storage.k8s.io/v1", classes), {}
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        if path == f"{crds}/scaledobjects.keda.sh":
            if not self.keda_installed:
                return _not_found(
                    "customresourcedefinitions.apiextensions.k8s.io", path.rsplit("/", 1)[1]
                )
            return (
                200,
                {
                    "kind": "CustomResourceDefinition",
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "metadata": {"name": "scaledobjects.keda.sh"},
                    "spec": {
                        "group": "keda.sh",
                        "names": {"kind": "ScaledObject", "plural": "scaledobjects"},
                        "scope": "Namespaced",
                        "versions": [],
                    },
                },
                {},
            )
        if m := re.fullmatch(rf"/apis/batch/v1/namespaces/{NS}/jobs(?:/([^/]+))?", path):
            if m.group(1) is None:
                items = [
                    j
                    for j in self.jobs.values()
                    if matches(j["metadata"].get("labels", {}), selector)
                ]
                return 200, _list("JobList", "batch/v1", items), {}
            if m.group(1) not in self.jobs:
                return _not_found("jobs.batch", m.group(1))
            job = self.jobs[m.group(1)]
            if method == "DELETE":
                del self.jobs[m.group(1)]
                return _deleted("batch", "jobs", job)
            return 200, copy.deepcopy(job), {}
        if path == "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io":
            if not self.metrics_server:
                return _not_found("apiservices.apiregistration.k8s.io", "v1beta1.metrics.k8s.io")
            return 200, metrics_api_service(), {}
        if m := re.fullmatch(rf"{pods}/([^/:]+):(\d+)/proxy/(.*)", path):
            return self._pod_proxy(m.group(1), int(m.group(2)), m.group(3))
        if m := re.fullmatch(rf"{services}/([^/:]+)(?::([^/]+))?/proxy(/.*)?", path):
            return self._service_proxy(m.group(1), m.group(2), m.group(3) or "/", headers)
        if m := re.fullmatch(f"{pods}(?:/([^/]+))?", path):
            # Watching pods is watching the controllers work too.
            for d in list(self.deployments.values()):
                self.step(d)
            for s in self.statefulsets.values():
                self.step_statefulset(s)
            self.tick_pods()
            all_pods = self.pods()
            if m.group(1) is None:
                items = [p for p in all_pods if matches(p["metadata"]["labels"], selector)]
                return 200, _list("PodList", "v1", items), {}
            if method == "DELETE":
                return self.delete_pod(m.group(1), query.get("gracePeriodSeconds"))
            pod = next((p for p in all_pods if p["metadata"]["name"] == m.group(1)), None)
            if pod is None:
                return _not_found("pods", m.group(1))
            return 200, pod, {}
        return _status(404, "NotFound", "the server could not find the requested resource")

    def _hpa_request(self, method: str, name: str | None, body: Any, ctype: str) -> Answer:
        if name is None:
            items = list(self.hpas.values())
            return 200, _list("HorizontalPodAutoscalerList", "autoscaling/v2", items), {}
        if name not in self.hpas:
            return _not_found("horizontalpodautoscalers.autoscaling", name)
        h = self.hpas[name]
        if method == "DELETE":
            del self.hpas[name]
            return _deleted("autoscaling", "horizontalpodautoscalers", h)
        if method == "PATCH":
            # Accepted, as the API server would: KEDA's operator writes its own HPA back from
            # the ScaledObject at its next reconcile (reconcile_keda).
            patched = apply_patch(h, body, ctype)
            h.clear()
            h.update(patched)
            h["metadata"]["generation"] = h["metadata"].get("generation", 1) + 1
        return 200, copy.deepcopy(h), {}

    def _deployment_request(
        self,
        method: str,
        name: str | None,
        scale: bool,
        body: Any,
        selector: str | None,
        ctype: str = "",
    ) -> Answer:
        if name is None and method == "POST":
            return self._create(body)
        if name is None:
            items = [
                d for d in self.deployments.values() if matches(d["metadata"]["labels"], selector)
            ]
            for d in items:
                self.step(d)
            self.tick_pods()
            return 200, _list("DeploymentList", "apps/v1", items), {}
        if name not in self.deployments:
            return _not_found("deployments.apps", name)
        d = self.deployments[name]
        if scale and method == "PATCH":
            wanted = apply_patch(self._scale(d, 0), body, ctype)["spec"]["replicas"]
            if d["spec"]["replicas"] != wanted:
                d["spec"]["replicas"] = wanted
                self._bump(d)
        elif scale:
            pass
        elif method == "PATCH":
            before = json.dumps(d["spec"], sort_keys=True)
            patched = apply_patch(d, body, ctype)
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
        self,
        method: str,
        name: str | None,
        scale: bool,
        body: Any,
        selector: str | None,
        ctype: str = "",
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
            wanted = s["spec"]["replicas"]
            if method == "PATCH":
                wanted = apply_patch(self._scale(s, 0), body, ctype)["spec"]["replicas"]
            if wanted != s["spec"]["replicas"]:
                s["spec"]["replicas"] = wanted
                self._bump(s)
            return 200, self._scale(s, s["status"]["replicas"]), {}
        if method == "PATCH":
            before = json.dumps(s["spec"], sort_keys=True)
            s.update(apply_patch(s, body, ctype))
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

    # -- pods ----------------------------------------------------------------------------------
    def _names(self, owner: str, count: int, fixed: bool) -> list[str]:
        """The pods an owner runs now: a ReplicaSet's get new names as they come (the newest
        go first on a scale-down), a StatefulSet's are its ordinals."""
        if fixed:
            return [f"{owner}-{i}" for i in range(count)]
        names = self.pod_names.setdefault(owner, [])
        while len(names) < count:
            self.pod_serial += 1
            names.append(f"{owner}-p{self.pod_serial}")
        for gone in names[count:]:
            self.recovering.pop(gone, None)
        del names[count:]
        return names

    def _shown_ready(self, rs: Obj) -> int:
        """Ready pods of a ReplicaSet: the controller's count, less the pods recovering."""
        names = self._names(rs["metadata"]["name"], rs["status"]["replicas"], fixed=False)
        ready = rs["status"].get("readyReplicas", 0)
        return sum(1 for i, n in enumerate(names) if i < ready and n not in self.recovering)

    def _owner_of(self, pod_name: str) -> tuple[str, Obj] | None:
        for rs_name, names in self.pod_names.items():
            if pod_name in names and rs_name in self.replicasets:
                return "rs", self.replicasets[rs_name]
        for s in self.statefulsets.values():
            if pod_name in self._names(s["metadata"]["name"], s["status"]["replicas"], True):
                return "sts", s
        return None

    def _resync(self) -> None:
        for d in self.deployments.values():
            reason = self._reason(d)
            self._sync(
                d,
                done=reason == "NewReplicaSetAvailable",
                deadline=reason == "ProgressDeadlineExceeded",
            )

    def tick_pods(self) -> None:
        """One read's worth of time for pods: terminating ones go, recovering ones get
        ready."""
        for name, (doc, left) in list(self.terminating.items()):
            if left <= 1:
                del self.terminating[name]
            else:
                self.terminating[name] = (doc, left - 1)
        changed = False
        for name, left in list(self.recovering.items()):
            if left <= 1:
                del self.recovering[name]
                changed = True
            else:
                self.recovering[name] = left - 1
        if changed:
            self._resync()

    def delete_pod(self, name: str, grace: str | None) -> Answer:
        """As the API server does: ``gracePeriodSeconds=0`` removes the object at once (a force
        deletion: the kubelet still stops the containers with SIGTERM and the pod's grace
        period, out of sight of the API); otherwise the pod stays, Terminating (its
        deletionTimestamp set, not ready), until the kubelet reports its containers gone. Either
        way its ReplicaSet sees it gone at once and creates a replacement."""
        pod = next((p for p in self.pods() if p["metadata"]["name"] == name), None)
        owner = self._owner_of(name)
        if pod is None or owner is None:
            return _not_found("pods", name)
        self.deleted_pods.append((name, grace))
        kind, obj = owner
        if grace != "0":
            seconds = (
                int(grace) if grace else int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            )
            doc = copy.deepcopy(pod)
            doc["metadata"]["deletionTimestamp"] = STAMP
            doc["metadata"]["deletionGracePeriodSeconds"] = seconds
            doc["status"]["conditions"][0]["status"] = "False"
            doc["status"]["containerStatuses"][0]["ready"] = False
            if kind == "rs":
                self.terminating[name] = (doc, TERMINATING_READS)
        if kind == "rs":
            names = self.pod_names[obj["metadata"]["name"]]
            index = names.index(name)
            self.pod_serial += 1
            names[index] = f"{obj['metadata']['name']}-p{self.pod_serial}"
            self.recovering[names[index]] = RECOVER_READS
        else:
            self.recovering[name] = RECOVER_READS
        self._resync()
        answer = copy.deepcopy(pod)
        if grace != "0":
            answer["metadata"]["deletionTimestamp"] = STAMP
        return 200, answer, {}

    def exec(self, name: str, container: str | None, command: list[str]) -> tuple[int, str, str]:
        """What a command does in a container of the fake: a ``kill -KILL`` of the
        container's processes kills its app when the pod shares its process namespace (the app
        is then not PID 1, which ignores a SIGKILL from inside its own namespace): the kubelet
        restarts the container (restartCount + 1, exit 137, not ready for a while)."""
        pod = next((p for p in self.pods() if p["metadata"]["name"] == name), None)
        if pod is None:
            raise LookupError(f'pods "{name}" not found')
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = container or names[0]
        if container not in names:
            raise LookupError(f"container {container} is not valid for pod {name}")
        self.execs.append((name, container, list(command)))
        script = " ".join(command)
        if "kill -KILL" not in script:
            return 0, "", ""
        if not pod["spec"].get("shareProcessNamespace"):
            return 1, "", "no process of this container to kill\n"
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.recovering[name] = RECOVER_READS
        self._resync()
        return 0, "SIGKILL sent to 1 process(es)\n", ""

    def pods(self) -> list[Obj]:
        out: list[Obj] = []
        owners: list[tuple[list[str], Obj, int, bool]] = []
        for rs in self.replicasets.values():
            owner = rs["metadata"]["ownerReferences"][0]["name"]
            status = rs["status"]
            names = self._names(rs["metadata"]["name"], status["replicas"], fixed=False)
            owners.append(
                (
                    names,
                    rs["spec"]["template"],
                    status.get("readyReplicas", 0),
                    owner in self.crashing,
                )
            )
        for s in self.statefulsets.values():
            status = s["status"]
            names = self._names(s["metadata"]["name"], status["replicas"], fixed=True)
            owners.append((names, s["spec"]["template"], status.get("readyReplicas", 0), False))
        for names, template, ready, crashing in owners:
            for i, name in enumerate(names):
                up = i < ready and name not in self.recovering
                restarts = self.restarts.get(name, 0)
                out.append(_pod(name, template, up, crashing, len(out), self.version, restarts))
        out += [copy.deepcopy(doc) for doc, _ in self.terminating.values()]
        return out


def _pod(
    name: str, template: Obj, ready: bool, crashing: bool, index: int, rv: int, restarts: int = 0
) -> Obj:
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
    elif restarts:  # the last run of the container was killed (SIGKILL: 128 + 9)
        state = {"running": {"startedAt": STAMP}}
        last = {
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "startedAt": STAMP,
                "finishedAt": STAMP,
                "containerID": "containerd://" + "2" * 64,
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
                    "restartCount": restarts or (0 if ready or not crashing else 2),
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
            metrics.requests.inc((route, service, version, "500"), failed)
            metrics.requests.inc((route, service, version, "200"), n - failed)
            for _ in range(n):
                metrics.latency.observe((route, service, version), 0.02)
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


def _denied(target: str, manager: str) -> Answer:
    return _status(
        403,
        "Forbidden",
        f'admission webhook "vscaledobject.kb.io" denied the request: the workload '
        f"'{target}' of type 'apps/v1.Deployment' is already managed by the {manager}",
    )


def _hpa_conditions(metrics_server: bool) -> list[Obj]:
    if metrics_server:
        return [
            _cond("AbleToScale", "True", "ReadyForNewScale", "recommended size matches"),
            _cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to compute"),
            _cond("ScalingLimited", "False", "DesiredWithinRange", "within range"),
        ]
    # What the HPA controller reports when no metrics-server serves the resource metrics API.
    return [
        _cond("AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get"),
        _cond(
            "ScalingActive",
            "False",
            "FailedGetResourceMetric",
            "the HPA was unable to compute the replica count: failed to get cpu utilization: "
            "unable to get metrics for resource cpu: unable to fetch metrics from resource "
            "metrics API: the server could not find the requested resource (get "
            "pods.metrics.k8s.io)",
        ),
    ]


def node(name: str, *, taints: list[Obj] | None = None, unschedulable: bool = False) -> Obj:
    """A Node as the API returns it (what the prerequisite checks read)."""
    doc: Obj = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": hashlib.md5(name.encode()).hexdigest(),
            "resourceVersion": "700",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"providerID": f"kind://docker/kind/{name}"},
        "status": {
            "allocatable": {"cpu": "8", "memory": "16318064Ki", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "16420464Ki", "pods": "110"},
            "conditions": [_cond("Ready", "True", "KubeletReady", "kubelet is posting ready")],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "5f0c9d6e-1b2a-4e3c-8d7f-0a1b2c3d4e5f",
                "containerRuntimeVersion": "containerd://2.0.3",
                "kernelVersion": "6.1.0-27-amd64",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.32.2",
                "machineID": "0123456789abcdef0123456789abcdef",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "0123456789abcdef0123456789abcdef",
            },
        },
    }
    if taints:
        doc["spec"]["taints"] = taints
    if unschedulable:
        doc["spec"]["unschedulable"] = True
    return doc


def storage_class(name: str) -> Obj:
    """kind's default StorageClass (the local-path provisioner)."""
    return {
        "kind": "StorageClass",
        "apiVersion": "storage.k8s.io/v1",
        "metadata": {
            "name": name,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def job(name: str, *, succeeded: int = 0, suspend: bool = False, active: int = 0) -> Obj:
    return {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": hashlib.md5(name.encode()).hexdigest(),
            "labels": {"app.kubernetes.io/part-of": "mesh-demo", NAME: name},
        },
        "spec": {
            "suspend": suspend,
            "template": {"metadata": {}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        },
        "status": {k: v for k, v in (("succeeded", succeeded), ("active", active)) if v},
    }


def metrics_api_service() -> Obj:
    return {
        "kind": "APIService",
        "apiVersion": "apiregistration.k8s.io/v1",
        "metadata": {"name": "v1beta1.metrics.k8s.io", "resourceVersion": "800"},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
            "insecureSkipTLSVerify": True,
        },
        "status": {"conditions": [_cond("Available", "True", "Passed", "all checks passed")]},
    }


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
            def _exec(self, name: str) -> None:
                """``pods/NAME/exec``: a WebSocket upgrade, the output, the exit status."""
                parts = urlsplit(self.path)
                params = parse_qs(parts.query)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with cluster_ref.lock:
                    cluster_ref.requests.append(("GET", self.path, "", None))
                    try:
                        code, out, err = cluster_ref.exec(
                            name, (params.get("container") or [None])[0], params.get("command", [])
                        )
                    except LookupError as exc:
                        status, doc, _ = _status(400, "BadRequest", str(exc))
                        data = json.dumps(doc).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                serve_exec(self.wfile, headers, code, out, err)
                self.close_connection = True

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                exec_path = re.fullmatch(rf"/api/v1/namespaces/{NS}/pods/([^/]+)/exec", parts.path)
                if exec_path and self.headers.get("Upgrade", "").lower() == "websocket":
                    self._exec(exec_path.group(1))
                    return
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
