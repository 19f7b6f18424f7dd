"""A fake Kubernetes API server: real apps/v1 and autoscaling/v2 response shapes, in a thread.

The objects start from the project's own manifests (``k8s/base/apps``, the canary component)
plus what the API server adds (namespace, uid, resourceVersion, generation, defaults, status).
A tiny Deployment controller moves one step per GET of a Deployment, the way a real rollout
looks to a poller: the new generation is observed, the new ReplicaSet grows by one (surge 1),
an old one shrinks by one (unavailable 0), until the Progressing condition says
NewReplicaSetAvailable; a Deployment in ``stuck`` stops after one new replica and reports
ProgressDeadlineExceeded.
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

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [
    ROOT / "k8s/base/apps/gateway.yaml",
    ROOT / "k8s/base/apps/orders.yaml",
    ROOT / "k8s/base/apps/payments.yaml",
    ROOT / "k8s/components/canary/orders-v2.yaml",
]
NS = "mesh"
STAMP = "2026-11-24T10:00:00Z"
Obj = dict[str, Any]


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


class FakeCluster:
    def __init__(self, replicas: dict[str, int] | None = None) -> None:
        self.lock = threading.Lock()
        self.version = 1000
        self.deployments: dict[str, Obj] = {}
        self.replicasets: dict[str, Obj] = {}
        self.hpas: dict[str, Obj] = {}
        self.stuck: set[str] = set()
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content type, body
        self.deleted_pods: list[tuple[str, str | None]] = []
        counts = {"gateway": 2, "orders": 3, "payments": 2, "orders-v2": 1, **(replicas or {})}
        for path in MANIFESTS:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc["kind"] == "Deployment":
                    self._add_deployment(doc, counts[doc["metadata"]["name"]])
                elif doc and doc["kind"] == "HorizontalPodAutoscaler":
                    self._add_hpa(doc)

    # -- objects -------------------------------------------------------------------------------
    def _meta(self, meta: Obj) -> Obj:
        self.version += 1
        name = meta["name"]
        return {
            **meta,
            "namespace": NS,
            "uid": hashlib.md5(name.encode()).hexdigest(),
            "resourceVersion": str(self.version),
            "creationTimestamp": STAMP,
        }

    def _add_deployment(self, doc: Obj, replicas: int) -> None:
        d = copy.deepcopy(doc)
        d["metadata"] = self._meta(d["metadata"]) | {"generation": 1}
        d["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        d["spec"] = {"replicas": replicas, "progressDeadlineSeconds": 600, **d["spec"]}
        d["spec"]["replicas"] = replicas
        self.deployments[d["metadata"]["name"]] = d
        rs = self._replicaset(d, revision=1)
        rs["spec"]["replicas"] = rs["status"]["replicas"] = replicas
        self._rs_status(rs)
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
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
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
        name = d["metadata"]["name"]
        return [
            rs
            for rs in self.replicasets.values()
            if rs["metadata"]["ownerReferences"][0]["name"] == name
        ]

    def _current_rs(self, d: Obj) -> Obj:
        return self._replicaset(d, revision=0)  # found by its template hash

    @staticmethod
    def _rs_status(rs: Obj) -> None:
        n = rs["spec"]["replicas"]
        rs["status"] = {
            "replicas": n,
            "fullyLabeledReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "observedGeneration": rs["metadata"]["generation"],
        }
        if not n:
            rs["status"] = {"replicas": 0, "observedGeneration": rs["metadata"]["generation"]}

    def _sync(self, d: Obj, done: bool, deadline: bool = False) -> None:
        """The Deployment's status from its ReplicaSets."""
        new = self._current_rs(d)
        total = sum(rs["status"]["replicas"] for rs in self._owned(d))
        updated = new["status"]["replicas"]
        available = sum(rs["status"].get("availableReplicas", 0) for rs in self._owned(d))
        if deadline:
            progressing = _cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{new["metadata"]["name"]}" has timed out progressing.',
            )
        elif done:
            progressing = _cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.',
            )
        else:
            progressing = _cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{new["metadata"]["name"]}" is progressing.',
            )
        d["status"] = {
            "observedGeneration": d["status"]["observedGeneration"]
            if "status" in d
            else d["metadata"]["generation"],
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                _cond(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                ),
                progressing,
            ],
        }
        if total > available:
            d["status"]["unavailableReplicas"] = total - available

    # -- the controller: one step per GET ------------------------------------------------------
    def step(self, d: Obj) -> None:
        status, generation = d["status"], d["metadata"]["generation"]
        if status["observedGeneration"] < generation:
            status["observedGeneration"] = generation
            self._sync(d, done=False)
            return
        if status["conditions"][1]["reason"] in (
            "NewReplicaSetAvailable",
            "ProgressDeadlineExceeded",
        ):
            return
        new = self._current_rs(d)
        old = [rs for rs in self._owned(d) if rs is not new and rs["spec"]["replicas"]]
        desired = d["spec"]["replicas"]
        total = new["spec"]["replicas"] + sum(rs["spec"]["replicas"] for rs in old)
        name = d["metadata"]["name"]
        if name in self.stuck and new["spec"]["replicas"] >= 1:
            self._sync(d, done=False, deadline=True)
            return
        if total > desired and old:
            old[0]["spec"]["replicas"] -= 1
            self._rs_status(old[0])
        elif new["spec"]["replicas"] < desired:
            new["spec"]["replicas"] += 1
            if name in self.stuck:  # the new pods never get ready
                new["status"] = {"replicas": new["spec"]["replicas"], "observedGeneration": 1}
            else:
                self._rs_status(new)
        left = any(rs["spec"]["replicas"] for rs in old)
        self._sync(d, done=not left and new["spec"]["replicas"] == desired)

    # -- requests ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Obj]:
        apps = f"/apis/apps/v1/namespaces/{NS}"
        hpa = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
        pods = f"/api/v1/namespaces/{NS}/pods"
        selector = query.get("labelSelector")
        if m := re.fullmatch(f"{apps}/deployments(?:/([^/]+))?(/scale)?", path):
            name, scale = m.group(1), m.group(2)
            if name is None:
                items = [
                    d
                    for d in self.deployments.values()
                    if matches(d["metadata"]["labels"], selector)
                ]
                for d in items:
                    self.step(d)
                return 200, _list("DeploymentList", "apps/v1", items)
            if name not in self.deployments:
                return _not_found("deployments.apps", name)
            d = self.deployments[name]
            if scale and method == "PATCH":
                d["spec"]["replicas"] = body["spec"]["replicas"]
                self._bump(d)
                self._scale_now(d)
            elif method == "PATCH":
                before = json.dumps(d["spec"], sort_keys=True)
                patched = merge(d, body)
                d.clear()
                d.update(patched)
                if json.dumps(d["spec"], sort_keys=True) != before:
                    self._bump(d)
                    revision = (
                        int(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) + 1
                    )
                    d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(
                        revision
                    )
                    self._replicaset(d, revision)
                response = copy.deepcopy(d)
                return 200, response
            elif not scale:
                response = copy.deepcopy(d)
                self.step(d)
                return 200, response
            return 200, self._scale(d)
        if path == f"{apps}/replicasets":
            items = [
                r for r in self.replicasets.values() if matches(r["metadata"]["labels"], selector)
            ]
            return 200, _list("ReplicaSetList", "apps/v1", items)
        if m := re.fullmatch(f"{hpa}(?:/([^/]+))?", path):
            if m.group(1) is None:
                return 200, _list(
                    "HorizontalPodAutoscalerList", "autoscaling/v2", list(self.hpas.values())
                )
            if m.group(1) not in self.hpas:
                return _not_found("horizontalpodautoscalers.autoscaling", m.group(1))
            h = self.hpas[m.group(1)]
            if method == "PATCH":
                h.update(merge(h, body))
                h["metadata"]["generation"] = h["metadata"].get("generation", 1) + 1
            return 200, copy.deepcopy(h)
        if m := re.fullmatch(f"{pods}(?:/([^/]+))?", path):
            all_pods = self.pods()
            if m.group(1) is None:
                items = [p for p in all_pods if matches(p["metadata"]["labels"], selector)]
                return 200, _list("PodList", "v1", items)
            pod = next((p for p in all_pods if p["metadata"]["name"] == m.group(1)), None)
            if pod is None:
                return _not_found("pods", m.group(1))
            if method == "DELETE":
                self.deleted_pods.append((m.group(1), query.get("gracePeriodSeconds")))
            return 200, pod
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "message": "the server could not find the requested resource",
            "code": 404,
        }

    def _bump(self, d: Obj) -> None:
        d["metadata"]["generation"] += 1
        self.version += 1
        d["metadata"]["resourceVersion"] = str(self.version)

    def _scale_now(self, d: Obj) -> None:
        rs = self._current_rs(d)
        rs["spec"]["replicas"] = d["spec"]["replicas"]
        self._rs_status(rs)
        d["status"]["observedGeneration"] = d["metadata"]["generation"]
        self._sync(d, done=True)

    def _scale(self, d: Obj) -> Obj:
        labels = d["spec"]["selector"]["matchLabels"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: d["metadata"][k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {
                "replicas": d["status"]["replicas"],
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    def pods(self) -> list[Obj]:
        out: list[Obj] = []
        for rs in self.replicasets.values():
            template = rs["spec"]["template"]
            ready = rs["status"].get("readyReplicas", 0)
            for i in range(rs["status"]["replicas"]):
                name = f"{rs['metadata']['name']}-p{i}"
                is_ready = i < ready
                out.append(
                    {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {
                            "name": name,
                            "namespace": NS,
                            "uid": hashlib.md5(name.encode()).hexdigest(),
                            "resourceVersion": str(self.version),
                            "labels": template["metadata"]["labels"],
                            "annotations": template["metadata"].get("annotations", {}),
                        },
                        "spec": template["spec"],
                        "status": {
                            "phase": "Running",
                            "podIP": f"10.0.0.{len(out) + 10}",
                            "startTime": STAMP,
                            "conditions": [
                                _cond("Ready", "True" if is_ready else "False", None, None)
                            ],
                            "containerStatuses": [
                                {
                                    "name": "app",
                                    "image": template["spec"]["containers"][0]["image"],
                                    "imageID": "sha256:" + "0" * 64,
                                    "ready": is_ready,
                                    "started": True,
                                    "restartCount": 0 if is_ready else 2,
                                    "state": {"running": {"startedAt": STAMP}},
                                }
                            ],
                        },
                    }
                )
        return out


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


def _not_found(resource: str, name: str) -> tuple[int, Obj]:
    return 404, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{resource} "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": resource.split(".")[0]},
        "code": 404,
    }


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
                with cluster_ref.lock:
                    cluster_ref.requests.append((self.command, self.path, kind, body))
                    code, doc = cluster_ref.handle(self.command, parts.path, query, body)
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = _serve

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
