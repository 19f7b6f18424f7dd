"""Offline checks of built Kubernetes manifests: policies and a NetworkPolicy evaluator.

Every check takes the objects of one `kubectl kustomize` build (plain dicts) and returns a list
of violations, one readable line each; an empty list means the build passes. The tests feed them
the real builds and, to show each check can fail, deliberately broken manifests.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

Obj = dict[str, Any]

NAMESPACE = "mesh"
NAME_LABEL = "app.kubernetes.io/name"
TIER_LABEL = "mesh.demo/tier"
VERSION_LABEL = "mesh.demo/version"
PROBES_EXEMPT = "mesh.demo/probes-exempt"
FIXED_REPLICAS = "mesh.demo/fixed-replicas"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")

# Containers allowed a writable root filesystem, with the reason. Every other container must
# declare readOnlyRootFilesystem: true.
WRITABLE_ROOT_ALLOWED = {
    ("StatefulSet", "kafka", "kafka"): "the image renders server.properties at every start",
}

PINNED_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def load_documents(text: str) -> list[Obj]:
    """The non-empty YAML documents of a multi-document text."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def ident(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(objs: Iterable[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") in kinds]


def find(objs: Iterable[Obj], kind: str, name: str) -> Obj | None:
    for obj in objs:
        if obj.get("kind") == kind and obj["metadata"]["name"] == name:
            return obj
    return None


def pod_template(obj: Mapping[str, Any]) -> Obj | None:
    """The pod template of a workload (None for other kinds)."""
    kind = obj.get("kind")
    template: Obj
    if kind == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
        return template
    if kind in WORKLOAD_KINDS:
        template = obj["spec"]["template"]
        return template
    if kind == "Pod":
        return {"metadata": obj["metadata"], "spec": obj["spec"]}
    return None


def workloads(objs: Iterable[Obj]) -> list[Obj]:
    return [o for o in objs if pod_template(o) is not None]


def containers(pod_spec: Mapping[str, Any]) -> list[tuple[str, Obj]]:
    """(kind of container, container) for init, regular and ephemeral containers."""
    out: list[tuple[str, Obj]] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        out += [(key, c) for c in pod_spec.get(key) or []]
    return out


def template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    template = pod_template(obj)
    if template is None:
        return {}
    return dict((template.get("metadata") or {}).get("labels") or {})


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against labels; {} matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def plain_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A Service's map selector; an empty or missing one selects no pod."""
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------
# Containers: probes, resources, security, images


def image_is_pinned(image: str) -> bool:
    """A tag other than latest, or a digest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return tag != "latest" and bool(PINNED_TAG.match(tag)) and any(ch.isdigit() for ch in tag)


def _is_app(obj: Mapping[str, Any]) -> bool:
    return template_labels(obj).get(TIER_LABEL) == "app"


def check_containers(objs: Iterable[Obj]) -> list[str]:
    """Probes, requests and limits, non-root, no privilege escalation, drop ALL, a read-only
    root filesystem (unless allowed), seccomp, a pinned image; no token or service links."""
    errors: list[str] = []
    for obj in workloads(objs):
        template = pod_template(obj)
        assert template is not None
        spec = template["spec"]
        pod_sc = spec.get("securityContext") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        exempt = str(annotations.get(PROBES_EXEMPT, "")).strip()
        where = ident(obj)
        if spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken is not false")
        if spec.get("enableServiceLinks") is not False:
            errors.append(f"{where}: enableServiceLinks is not false")
        for host_field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host_field):
                errors.append(f"{where}: {host_field} is on")
        for kind, c in containers(spec):
            cw = f"{where} {kind[:-1]} {c.get('name')}"
            sc = c.get("securityContext") or {}
            image = str(c.get("image", ""))
            if not image_is_pinned(image):
                errors.append(f"{cw}: image {image!r} is not pinned (tag or digest, not latest)")
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(part) or {}):
                        errors.append(f"{cw}: no {part}.{res}")
            run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            if run_as_non_root is not True:
                errors.append(f"{cw}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                errors.append(f"{cw}: runs as uid 0")
            if sc.get("privileged"):
                errors.append(f"{cw}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{cw}: capabilities do not drop ALL")
            added = set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
            if added:
                errors.append(f"{cw}: adds capabilities {sorted(added)}")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                errors.append(f"{cw}: seccompProfile is not RuntimeDefault")
            read_only = sc.get("readOnlyRootFilesystem")
            allowed = (obj["kind"], obj["metadata"]["name"], c.get("name")) in WRITABLE_ROOT_ALLOWED
            if read_only is None:
                errors.append(f"{cw}: readOnlyRootFilesystem is not declared")
            elif read_only is not True and not allowed:
                errors.append(f"{cw}: readOnlyRootFilesystem is not true")
            if obj["kind"] in LONG_RUNNING_KINDS and kind == "containers" and not exempt:
                for probe in ("readinessProbe", "livenessProbe"):
                    if not c.get(probe):
                        errors.append(f"{cw}: no {probe}")
            if _is_app(obj) and kind == "containers":
                errors += _check_app_probes(cw, c)
    return errors


def _http_path(probe: Mapping[str, Any] | None) -> str | None:
    if not probe or "httpGet" not in probe:
        return None
    return str(probe["httpGet"].get("path"))


def _check_app_probes(where: str, c: Mapping[str, Any]) -> list[str]:
    errors = []
    if _http_path(c.get("readinessProbe")) != "/readyz":
        errors.append(f"{where}: readinessProbe is not GET /readyz")
    if _http_path(c.get("livenessProbe")) != "/healthz":
        errors.append(f"{where}: livenessProbe is not GET /healthz")
    if not c.get("startupProbe"):
        errors.append(f"{where}: no startupProbe")
    return errors


RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def check_pod_security_restricted(objs: Iterable[Obj]) -> list[str]:
    """What Pod Security Admission's `restricted` profile would refuse (the namespace enforces
    it), beyond what check_containers covers: volume types, host ports, sysctls."""
    errors: list[str] = []
    for obj in workloads(objs):
        template = pod_template(obj)
        assert template is not None
        spec = template["spec"]
        where = ident(obj)
        for volume in spec.get("volumes") or []:
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUME_TYPES:
                errors.append(f"{where}: volume {volume['name']} of type {sorted(kinds)}")
        for sysctl in (spec.get("securityContext") or {}).get("sysctls") or []:
            errors.append(f"{where}: sets sysctl {sysctl.get('name')}")
        for _, c in containers(spec):
            for port in c.get("ports") or []:
                if port.get("hostPort"):
                    errors.append(f"{where} {c['name']}: hostPort {port['hostPort']}")
    return errors


# ------------------------------------------------------------------------------------------
# Selectors, Services, references


def check_selectors(objs: Iterable[Obj]) -> list[str]:
    """Each controller's selector matches its pod template; no two controllers' selectors
    claim each other's pods (a v2 Deployment next to v1 must not overlap it)."""
    errors: list[str] = []
    controllers = [o for o in workloads(objs) if o["kind"] not in ("CronJob", "Pod")]
    for obj in controllers:
        selector = obj["spec"].get("selector")
        if obj["kind"] == "Job" and selector is None:
            continue  # generated by the Job controller
        if not selector_matches(selector, template_labels(obj)):
            errors.append(f"{ident(obj)}: selector {selector} does not match its pod labels")
    for a in controllers:
        for b in controllers:
            if a is b or a["kind"] == "Job" or b["kind"] == "Job":
                continue
            if selector_matches(a["spec"].get("selector"), template_labels(b)):
                errors.append(f"{ident(a)}: selector also matches the pods of {ident(b)}")
    return errors


def _container_ports(obj: Mapping[str, Any]) -> list[Obj]:
    template = pod_template(obj)
    assert template is not None
    return [p for _, c in containers(template["spec"]) for p in c.get("ports") or []]


def check_services(objs: Iterable[Obj]) -> list[str]:
    """Each Service selects at least one workload, and each of its target ports exists (by name
    or number, same protocol) on every workload it selects; a StatefulSet's serviceName names a
    headless Service."""
    objs = list(objs)
    errors: list[str] = []
    for svc in of_kind(objs, "Service"):
        selector = svc["spec"].get("selector")
        selected = [
            w for w in workloads(objs) if plain_selector_matches(selector, template_labels(w))
        ]
        if not selected:
            errors.append(f"{ident(svc)}: selector {selector} selects no workload")
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            protocol = port.get("protocol", "TCP")
            for w in selected:
                if not any(
                    (cp.get("name") == target or cp.get("containerPort") == target)
                    and cp.get("protocol", "TCP") == protocol
                    for cp in _container_ports(w)
                ):
                    errors.append(
                        f"{ident(svc)}: targetPort {target}/{protocol} is no container port of "
                        f"{ident(w)}"
                    )
    for sts in of_kind(objs, "StatefulSet"):
        governing = find(objs, "Service", sts["spec"].get("serviceName", ""))
        if governing is None or governing["spec"].get("clusterIP") != "None":
            errors.append(f"{ident(sts)}: serviceName does not name a headless Service")
    return errors


def _config_data(obj: Mapping[str, Any]) -> dict[str, str]:
    return {
        **(obj.get("data") or {}),
        **(obj.get("binaryData") or {}),
        **(obj.get("stringData") or {}),
    }


def check_references(objs: Iterable[Obj]) -> list[str]:
    """Every ConfigMap, Secret (and key), ServiceAccount named by a workload exists; every
    $(VAR) in env, command and args is defined before use; every scale target exists."""
    objs = list(objs)
    errors: list[str] = []

    def need(kind: str, name: str, key: str | None, optional: bool, where: str) -> dict[str, str]:
        target = find(objs, kind, name)
        if target is None:
            if not optional:
                errors.append(f"{where}: {kind} {name} does not exist in the build")
            return {}
        data = _config_data(target)
        if key is not None and key not in data and not optional:
            errors.append(f"{where}: {kind} {name} has no key {key}")
        return data

    for obj in workloads(objs):
        template = pod_template(obj)
        assert template is not None
        spec = template["spec"]
        where = ident(obj)
        sa = spec.get("serviceAccountName")
        if sa and find(objs, "ServiceAccount", sa) is None:
            errors.append(f"{where}: ServiceAccount {sa} does not exist in the build")
        for volume in spec.get("volumes") or []:
            if "configMap" in volume:
                v = volume["configMap"]
                need("ConfigMap", v["name"], None, v.get("optional", False), where)
            if "secret" in volume:
                v = volume["secret"]
                need("Secret", v["secretName"], None, v.get("optional", False), where)
            for source in (volume.get("projected") or {}).get("sources") or []:
                for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                    if key in source:
                        s = source[key]
                        need(kind, s["name"], None, s.get("optional", False), where)
        for _, c in containers(spec):
            cw = f"{where} {c.get('name')}"
            defined: set[str] = set()
            for env_from in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in env_from:
                        ref = env_from[key]
                        data = need(kind, ref["name"], None, ref.get("optional", False), cw)
                        defined |= {env_from.get("prefix", "") + k for k in data}
            for env in c.get("env") or []:
                source = env.get("valueFrom") or {}
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in source:
                        ref = source[key]
                        need(kind, ref["name"], ref["key"], ref.get("optional", False), cw)
                for var in ENV_REF.findall(str(env.get("value", ""))):
                    if var not in defined:
                        errors.append(f"{cw}: env {env['name']} uses $({var}) before it is set")
                defined.add(env["name"])
            for part in ("command", "args"):
                for arg in c.get(part) or []:
                    for var in ENV_REF.findall(str(arg)):
                        if var not in defined:
                            errors.append(f"{cw}: {part} uses $({var}), which is not set")
    for scaler in of_kind(objs, "HorizontalPodAutoscaler", "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        if find(objs, ref.get("kind", "Deployment"), ref["name"]) is None:
            errors.append(f"{ident(scaler)}: scale target {ref['name']} does not exist")
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        if not any(
            selector_matches(pdb["spec"].get("selector"), template_labels(w))
            for w in workloads(objs)
        ):
            errors.append(f"{ident(pdb)}: selects no workload")
    return errors


# ------------------------------------------------------------------------------------------
# Availability: autoscaling, disruption budgets, graceful shutdown, quorums


def scaler_of(objs: Iterable[Obj], deployment: str) -> Obj | None:
    for scaler in of_kind(objs, "HorizontalPodAutoscaler", "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") == "Deployment" and ref["name"] == deployment:
            return scaler
    return None


def min_replicas(objs: Iterable[Obj], deployment: Obj) -> int:
    """What a Deployment runs at least: its autoscaler's minimum, else spec.replicas (1)."""
    scaler = scaler_of(objs, deployment["metadata"]["name"])
    if scaler is None:
        return int(deployment["spec"].get("replicas", 1))
    if scaler["kind"] == "ScaledObject":
        return int(scaler["spec"].get("minReplicaCount", 0))
    return int(scaler["spec"].get("minReplicas", 1))


def _behavior(scaler: Mapping[str, Any]) -> Mapping[str, Any]:
    if scaler["kind"] == "ScaledObject":
        advanced = scaler["spec"].get("advanced") or {}
        return (advanced.get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
    return scaler["spec"].get("behavior") or {}


def check_autoscaling(objs: Iterable[Obj]) -> list[str]:
    """Every application Deployment is autoscaled (HPA autoscaling/v2 on CPU, or a KEDA
    ScaledObject) unless it declares fixed replicas with a reason; the behavior scales up at
    once and down only after a stabilization window; a Deployment an autoscaler owns does not
    set spec.replicas (kubectl apply would reset the autoscaler's decision)."""
    objs = list(objs)
    errors: list[str] = []
    for dep in of_kind(objs, "Deployment"):
        if not _is_app(dep):
            continue
        where = ident(dep)
        fixed = str((dep["metadata"].get("annotations") or {}).get(FIXED_REPLICAS, "")).strip()
        scaler = scaler_of(objs, dep["metadata"]["name"])
        if scaler is None:
            if not fixed:
                errors.append(f"{where}: no HorizontalPodAutoscaler or ScaledObject")
            continue
        if "replicas" in dep["spec"]:
            errors.append(f"{where}: sets spec.replicas although {ident(scaler)} owns the count")
        if scaler["kind"] == "HorizontalPodAutoscaler":
            if scaler["apiVersion"] != "autoscaling/v2":
                errors.append(f"{ident(scaler)}: not autoscaling/v2")
            if not any(
                m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
                for m in scaler["spec"].get("metrics") or []
            ):
                errors.append(f"{ident(scaler)}: does not scale on CPU")
            low, high = scaler["spec"].get("minReplicas", 1), scaler["spec"]["maxReplicas"]
        else:
            low = scaler["spec"].get("minReplicaCount", 0)
            high = scaler["spec"].get("maxReplicaCount", 100)
        if low > high:
            errors.append(f"{ident(scaler)}: minimum {low} above maximum {high}")
        behavior = _behavior(scaler)
        up = behavior.get("scaleUp") or {}
        down = behavior.get("scaleDown") or {}
        if not up or up.get("stabilizationWindowSeconds", 0) > 30:
            errors.append(f"{ident(scaler)}: scale-up is not immediate (window <= 30 s)")
        if not down or down.get("stabilizationWindowSeconds", 300) < 120:
            errors.append(f"{ident(scaler)}: scale-down is not stabilized (window >= 120 s)")
    return errors


def check_disruption_budgets(objs: Iterable[Obj], *, prod: bool) -> list[str]:
    """No budget can block a drain (maxUnavailable >= 1, or minAvailable below the replicas);
    in prod every Deployment has a budget selecting it."""
    objs = list(objs)
    errors: list[str] = []
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for pdb in pdbs:
        spec = pdb["spec"]
        jobs = [
            w
            for w in workloads(objs)
            if w["kind"] in ("Job", "CronJob")
            and selector_matches(spec["selector"], template_labels(w))
        ]
        if jobs:
            errors.append(
                f"{ident(pdb)}: selects the pods of {ident(jobs[0])}, which has no scale "
                "subresource: the budget cannot be computed and blocks evictions"
            )
        if "maxUnavailable" in spec:
            if spec["maxUnavailable"] in (0, "0", "0%"):
                errors.append(f"{ident(pdb)}: maxUnavailable 0 blocks every eviction")
        elif "minAvailable" in spec:
            selected = [
                w for w in workloads(objs) if selector_matches(spec["selector"], template_labels(w))
            ]
            total = sum(
                min_replicas(objs, w)
                if w["kind"] == "Deployment"
                else int(w["spec"].get("replicas", 1))
                for w in selected
            )
            if isinstance(spec["minAvailable"], int) and spec["minAvailable"] >= total:
                errors.append(
                    f"{ident(pdb)}: minAvailable {spec['minAvailable']} with {total} replicas "
                    "blocks every drain"
                )
    if prod:
        for dep in of_kind(objs, "Deployment"):
            if not any(selector_matches(p["spec"]["selector"], template_labels(dep)) for p in pdbs):
                errors.append(f"{ident(dep)}: no PodDisruptionBudget selects it")
    return errors


def check_prod_spread(objs: Iterable[Obj]) -> list[str]:
    """prod: every application runs at least 2 replicas (a canary declares its fixed size),
    and replicated applications prefer distinct nodes."""
    objs = list(objs)
    errors: list[str] = []
    for dep in of_kind(objs, "Deployment"):
        if not _is_app(dep):
            continue
        fixed = (dep["metadata"].get("annotations") or {}).get(FIXED_REPLICAS)
        count = min_replicas(objs, dep)
        if count < 2 and not fixed:
            errors.append(f"{ident(dep)}: {count} replica(s) in prod, at least 2 wanted")
        if count >= 2:
            affinity = dep["spec"]["template"]["spec"].get("affinity") or {}
            anti = affinity.get("podAntiAffinity") or {}
            terms = [
                t["podAffinityTerm"]
                for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
            ]
            terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
            if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms):
                errors.append(f"{ident(dep)}: no pod anti-affinity on kubernetes.io/hostname")
    return errors


def _env_value(objs: Iterable[Obj], container: Mapping[str, Any], name: str) -> str | None:
    for env in container.get("env") or []:
        if env["name"] == name and "value" in env:
            return str(env["value"])
    for env_from in container.get("envFrom") or []:
        ref = env_from.get("configMapRef")
        if ref:
            cm = find(objs, "ConfigMap", ref["name"])
            if cm and name in (cm.get("data") or {}):
                return str(cm["data"][name])
    return None


def check_graceful_shutdown(objs: Iterable[Obj]) -> list[str]:
    """Applications: a preStop pause, and a grace period covering it plus the app's drain."""
    objs = list(objs)
    errors: list[str] = []
    for dep in of_kind(objs, "Deployment"):
        if not _is_app(dep):
            continue
        spec = dep["spec"]["template"]["spec"]
        grace = int(spec.get("terminationGracePeriodSeconds", 30))
        for c in spec["containers"]:
            pre_stop = (c.get("lifecycle") or {}).get("preStop") or {}
            pause = int((pre_stop.get("sleep") or {}).get("seconds", 0))
            if pause <= 0:
                errors.append(f"{ident(dep)} {c['name']}: no preStop sleep")
            drain = int(_env_value(objs, c, "SHUTDOWN_GRACE_SECONDS") or 20)
            if grace <= pause + drain:
                errors.append(
                    f"{ident(dep)}: terminationGracePeriodSeconds {grace} does not cover preStop "
                    f"{pause} s + drain {drain} s"
                )
    return errors


def kafka_env(objs: Iterable[Obj], sts: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for c in sts["spec"]["template"]["spec"]["containers"]:
        for env_from in c.get("envFrom") or []:
            cm = find(objs, "ConfigMap", (env_from.get("configMapRef") or {}).get("name", ""))
            if cm:
                values.update(cm.get("data") or {})
    return values


def check_quorums(objs: Iterable[Obj]) -> list[str]:
    """Kafka's static KRaft voters are exactly the StatefulSet's pods, replication fits the
    broker count; Consul's bootstrap_expect equals its server count; both start their pods in
    parallel and publish not-ready addresses on the governing Service."""
    objs = list(objs)
    errors: list[str] = []
    kafka = find(objs, "StatefulSet", "kafka")
    if kafka is not None:
        n = int(kafka["spec"].get("replicas", 1))
        env = kafka_env(objs, kafka)
        service = kafka["spec"]["serviceName"]
        ns = kafka["metadata"].get("namespace", NAMESPACE)
        voters = [
            v.split("@", 1) for v in env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").split(",") if v
        ]
        wanted = [[str(i), f"kafka-{i}.{service}.{ns}.svc:9093"] for i in range(n)]
        if voters != wanted:
            errors.append(f"kafka: {n} brokers but quorum voters {voters}, wanted {wanted}")
        rf = int(env.get("KAFKA_DEFAULT_REPLICATION_FACTOR", "1"))
        min_isr = int(env.get("KAFKA_MIN_INSYNC_REPLICAS", "1"))
        for key in (
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ):
            if int(env.get(key, "3")) > n:
                errors.append(f"kafka: {key} above the {n} brokers")
        if rf > n or min_isr > rf:
            errors.append(f"kafka: replication {rf} / min in-sync {min_isr} with {n} brokers")
        if n >= 3 and (rf < 3 or min_isr != rf - 1):
            errors.append(f"kafka: {n} brokers should replicate 3 ways with min in-sync 2")
        node_id = next(
            (
                e
                for c in kafka["spec"]["template"]["spec"]["containers"]
                for e in c.get("env") or []
                if e["name"] == "KAFKA_NODE_ID"
            ),
            None,
        )
        field_path = (((node_id or {}).get("valueFrom") or {}).get("fieldRef") or {}).get(
            "fieldPath"
        )
        if field_path != "metadata.labels['apps.kubernetes.io/pod-index']":
            errors.append("kafka: KAFKA_NODE_ID is not the pod's ordinal")
        errors += _check_peer_discovery(objs, kafka)
    consul = find(objs, "StatefulSet", "consul")
    if consul is not None:
        n = int(consul["spec"].get("replicas", 1))
        config: dict[str, Any] = {}
        for volume in consul["spec"]["template"]["spec"].get("volumes") or []:
            cm = find(objs, "ConfigMap", (volume.get("configMap") or {}).get("name", ""))
            for text in (cm or {}).get("data", {}).values():
                config.update(json.loads(text))
        if config.get("bootstrap_expect") != n:
            errors.append(
                f"consul: {n} servers but bootstrap_expect {config.get('bootstrap_expect')}"
            )
        if n % 2 == 0:
            errors.append(f"consul: an even number of servers ({n}) adds no fault tolerance")
        service = consul["spec"]["serviceName"]
        if not any(service in str(j) for j in config.get("retry_join", [])):
            errors.append(f"consul: retry_join does not name the governing Service {service}")
        errors += _check_peer_discovery(objs, consul)
    return errors


def _check_peer_discovery(objs: Iterable[Obj], sts: Mapping[str, Any]) -> list[str]:
    errors = []
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        errors.append(f"{ident(sts)}: podManagementPolicy is not Parallel (quorum deadlock)")
    governing = find(objs, "Service", sts["spec"]["serviceName"])
    if governing is None or not governing["spec"].get("publishNotReadyAddresses"):
        errors.append(f"{ident(sts)}: its headless Service does not publish not-ready addresses")
    return errors


# ------------------------------------------------------------------------------------------
# KEDA ScaledObject (a CRD: no schema in kubernetes-validate, so its shape is checked here)

KAFKA_TRIGGER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "version",
    "partitionLimitation",
}
SCALED_OBJECT_SPEC_KEYS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}


def check_scaled_object_shape(so: Mapping[str, Any]) -> list[str]:
    """The fields of a keda.sh/v1alpha1 ScaledObject that this project uses, as KEDA documents
    them; returns violations. (The HPA behavior inside is validated separately against the
    autoscaling/v2 schema.)"""
    where = f"ScaledObject/{so.get('metadata', {}).get('name')}"
    errors: list[str] = []
    if so.get("apiVersion") != "keda.sh/v1alpha1":
        errors.append(f"{where}: apiVersion is not keda.sh/v1alpha1")
    spec = so.get("spec") or {}
    unknown = set(spec) - SCALED_OBJECT_SPEC_KEYS
    if unknown:
        errors.append(f"{where}: unknown spec fields {sorted(unknown)}")
    if not (spec.get("scaleTargetRef") or {}).get("name"):
        errors.append(f"{where}: no scaleTargetRef.name")
    for key in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
            errors.append(f"{where}: {key} is not a non-negative integer")
    triggers = spec.get("triggers") or []
    if not triggers:
        errors.append(f"{where}: no triggers")
    for i, trigger in enumerate(triggers):
        tw = f"{where} trigger {i}"
        metadata = trigger.get("metadata") or {}
        if not all(isinstance(v, str) for v in metadata.values()):
            errors.append(f"{tw}: metadata values must be strings")
        if trigger.get("type") == "kafka":
            missing = {"bootstrapServers", "consumerGroup", "topic"} - set(metadata)
            if missing:
                errors.append(f"{tw}: kafka trigger without {sorted(missing)}")
            unknown = set(metadata) - KAFKA_TRIGGER_KEYS
            if unknown:
                errors.append(f"{tw}: unknown kafka metadata {sorted(unknown)}")
            for key in ("lagThreshold", "activationLagThreshold"):
                if key in metadata and not str(metadata[key]).isdigit():
                    errors.append(f"{tw}: {key} is not a whole number")
            if metadata.get("offsetResetPolicy", "latest") not in ("latest", "earliest"):
                errors.append(f"{tw}: offsetResetPolicy is neither latest nor earliest")
        elif trigger.get("type") in ("cpu", "memory"):
            if trigger.get("metricType") not in ("Utilization", "AverageValue"):
                errors.append(f"{tw}: metricType is neither Utilization nor AverageValue")
            if not str(metadata.get("value", "")).isdigit():
                errors.append(f"{tw}: value is not a whole number")
        else:
            errors.append(f"{tw}: trigger type {trigger.get('type')!r} is not used here")
    return errors


# ------------------------------------------------------------------------------------------
# NetworkPolicy evaluator


@dataclass(frozen=True)
class PortSpec:
    number: int
    protocol: str
    name: str | None = None


@dataclass(frozen=True)
class Peer:
    """A possible source or destination of traffic: a workload's pods in the namespace, or a
    stand-in for something outside it (another namespace's pod, an address on the internet)."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    namespace_labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    ip: str = "10.244.0.10"
    ports: tuple[PortSpec, ...] = ()

    @property
    def external(self) -> bool:
        return self.namespace != NAMESPACE


@dataclass(frozen=True, order=True)
class Flow:
    src: str
    dst: str
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}:{self.port}/{self.protocol}"


# Stand-ins for what lives outside the namespace.
OUTSIDE = Peer("outside", None, ip="203.0.113.7")
OTHER_NAMESPACE = Peer(
    "other-namespace",
    "default",
    labels={"app": "anything"},
    namespace_labels={"kubernetes.io/metadata.name": "default"},
    ip="10.244.9.9",
)
KUBE_DNS = Peer(
    "kube-dns",
    "kube-system",
    labels={"k8s-app": "kube-dns"},
    namespace_labels={"kubernetes.io/metadata.name": "kube-system"},
    ip="10.244.1.2",
    ports=(PortSpec(53, "UDP", "dns"), PortSpec(53, "TCP", "dns-tcp")),
)
KEDA_OPERATOR = Peer(
    "keda",
    "keda",
    labels={"app": "keda-operator"},
    namespace_labels={"kubernetes.io/metadata.name": "keda"},
    ip="10.244.2.3",
)
EXTERNAL_PEERS = (OUTSIDE, OTHER_NAMESPACE, KUBE_DNS, KEDA_OPERATOR)


def namespace_peers(objs: Iterable[Obj]) -> list[Peer]:
    """One peer per workload of the namespace, named by its app.kubernetes.io/name label."""
    peers = []
    for i, w in enumerate(workloads(objs)):
        labels = template_labels(w)
        ports = tuple(
            PortSpec(int(p["containerPort"]), p.get("protocol", "TCP"), p.get("name"))
            for p in _container_ports(w)
        )
        peers.append(
            Peer(
                labels.get(NAME_LABEL, w["metadata"]["name"]),
                NAMESPACE,
                labels=labels,
                namespace_labels={"kubernetes.io/metadata.name": NAMESPACE},
                ip=f"10.244.100.{i + 1}",
                ports=ports,
            )
        )
    return peers


def _policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def _peer_matches(entry: Mapping[str, Any], peer: Peer, policy_ns: str) -> bool:
    if "ipBlock" in entry:
        if not peer.external or peer.namespace is not None:
            return False  # pod addresses: left to the implementation; treated as no match
        block = entry["ipBlock"]
        addr = ipaddress.ip_address(peer.ip)
        if addr not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(addr in ipaddress.ip_network(e) for e in block.get("except") or [])
    if peer.namespace is None:
        return False  # not a pod: only ipBlock can match it
    if "namespaceSelector" in entry:
        if not selector_matches(entry["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != policy_ns:
        return False
    if "podSelector" in entry:
        return selector_matches(entry["podSelector"], peer.labels)
    return True


def _port_matches(entries: list[Obj] | None, dst: Peer, port: PortSpec) -> bool:
    if not entries:
        return True
    for entry in entries:
        if entry.get("protocol", "TCP") != port.protocol:
            continue
        if "port" not in entry:
            return True
        value = entry["port"]
        if isinstance(value, str) and not value.isdigit():
            if any(
                p.name == value and p.number == port.number and p.protocol == port.protocol
                for p in dst.ports
            ):
                return True
            continue
        low = int(value)
        high = int(entry.get("endPort", low))
        if low <= port.number <= high:
            return True
    return False


def _allowed_by(
    policies: list[Obj], subject: Peer, other: Peer, dst: Peer, port: PortSpec, direction: str
) -> bool:
    """Whether the policies isolating `subject` in `direction` let the traffic through."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolating = [
        p
        for p in policies
        if direction in _policy_types(p)
        and selector_matches(p["spec"].get("podSelector"), subject.labels)
    ]
    if not isolating:
        return True
    for policy in isolating:
        policy_ns = policy["metadata"].get("namespace", NAMESPACE)
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(e, other, policy_ns) for e in peers):
                continue
            if _port_matches(rule.get("ports"), dst, port):
                return True
    return False


def candidate_ports(policies: Iterable[Obj], peers: Iterable[Peer]) -> set[tuple[int, str]]:
    """Every port worth trying: each declared container port, each port a policy names (with
    both protocols), and a few common ones, so that a policy opening an undeclared port shows."""
    found: set[int] = {22, 53, 80, 443, 8080}
    for peer in peers:
        found |= {p.number for p in peer.ports}
    for policy in policies:
        for key in ("ingress", "egress"):
            for rule in policy["spec"].get(key) or []:
                for entry in rule.get("ports") or []:
                    value = entry.get("port")
                    if isinstance(value, int):
                        found |= set(range(value, int(entry.get("endPort", value)) + 1))
    return {(n, proto) for n in found for proto in ("TCP", "UDP")}


def allowed_flows(objs: Iterable[Obj], external: Iterable[Peer] = EXTERNAL_PEERS) -> set[Flow]:
    """Every (source, destination, port) the build's NetworkPolicies allow, over the
    namespace's workloads and the stand-ins for the world outside. Traffic entirely outside the
    namespace is not ours to judge and is left out."""
    objs = list(objs)
    policies = of_kind(objs, "NetworkPolicy")
    inside = namespace_peers(objs)
    peers = inside + list(external)
    ports = candidate_ports(policies, peers)
    flows: set[Flow] = set()
    for src in peers:
        for dst in peers:
            if src.external and dst.external:
                continue
            for number, protocol in sorted(ports):
                named = next(
                    (p for p in dst.ports if p.number == number and p.protocol == protocol),
                    PortSpec(number, protocol),
                )
                egress_ok = src.external or _allowed_by(policies, src, dst, dst, named, "Egress")
                ingress_ok = dst.external or _allowed_by(policies, dst, src, dst, named, "Ingress")
                if egress_ok and ingress_ok:
                    flows.add(Flow(src.name, dst.name, number, protocol))
    return flows


APPS = ("gateway", "orders", "inventory", "payments", "notifications")
SERVICES = APPS[1:]
APP_DEPENDENCIES = (("kafka", 9092), ("redis", 6379), ("consul", 8500), ("otel-collector", 4318))


def design_flows(present: Iterable[str], external: Iterable[Peer] = EXTERNAL_PEERS) -> set[Flow]:
    """The flows of the design (DESIGN.md, k8s/README.md), among the workloads present."""
    here = set(present)
    flows: set[Flow] = set()

    def add(src: str, dst: str, port: int, protocol: str = "TCP") -> None:
        known = here | {p.name for p in external}
        if src in known and dst in known:
            flows.add(Flow(src, dst, port, protocol))

    for peer in external:  # users, the load balancer: anything outside may call the gateway
        add(peer.name, "gateway", 8080)
    for name in here:  # DNS for everyone
        add(name, "kube-dns", 53, "UDP")
        add(name, "kube-dns", 53, "TCP")
    add("locust", "gateway", 8080)
    add("locust", "locust", 5557)  # workers report to the master
    for service in SERVICES:
        add("gateway", service, 8080)
    for app in APPS:
        for dependency, port in APP_DEPENDENCIES:
            add(app, dependency, port)
        add("consul", app, 8080)  # health checks
        add("prometheus", app, 8080)  # scrapes
    add("prometheus", "consul", 8500)  # consul_sd and Consul's metrics
    add("prometheus", "otel-collector", 8888)
    add("prometheus", "jaeger", 8888)
    add("prometheus", "grafana", 3000)
    add("grafana", "prometheus", 9090)
    add("otel-collector", "jaeger", 4317)
    add("kafka", "kafka", 9092)  # replication
    add("kafka", "kafka", 9093)  # KRaft controllers
    add("consul", "consul", 8300)
    for port in (8301, 8302):
        add("consul", "consul", port, "TCP")
        add("consul", "consul", port, "UDP")
    return flows


def operational_flows(
    present: Iterable[str], external: Iterable[Peer] = EXTERNAL_PEERS
) -> set[Flow]:
    """Flows beyond the design that running the platform needs, each documented in
    components/network-policies/operations.yaml: the topic-creation Job and KEDA's operator
    reading consumer lag, both to Kafka's client port only."""
    known = set(present) | {p.name for p in external}
    wanted = {Flow("kafka-topics", "kafka", 9092), Flow("keda", "kafka", 9092)}
    return {f for f in wanted if f.src in known and f.dst in known}


def iter_violations(*lists: Iterable[str]) -> Iterator[str]:
    for items in lists:
        yield from items


# ------------------------------------------------------------------------------------------
# Consistency: addresses, the weights of versioned Deployments, the sources of HPA metrics

LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "0.0.0.0", "::", "[::]"}
_HOST_PORT = re.compile(r"^([A-Za-z0-9$()_.\[\]:-]*):(\d{1,5})$")


def addresses_in(value: str) -> list[tuple[str, int]]:
    """The host:port pairs a setting names: ``redis://redis:6379/0``, ``kafka:9092``,
    ``0@kafka-0.kafka-headless.mesh.svc:9093,1@...``, ``PLAINTEXT://$(POD_NAME).x.svc:9092``."""
    found = []
    for token in re.split(r"[,\s]+", value.strip()):
        if "://" in token:
            token = token.split("://", 1)[1]
        token = token.split("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
        match = _HOST_PORT.match(token)
        if match:
            found.append((match.group(1), int(match.group(2))))
    return found


def resolve_address(objs: Iterable[Obj], host: str, port: int) -> str | None:
    """Why ``host:port`` reaches nothing in this build (None when a Service port is there).
    Names: ``svc``, ``svc.mesh[.svc[.cluster.local]]``, a StatefulSet pod's
    ``pod.headless.mesh.svc`` (``$(POD_NAME)`` stands for any of its pods)."""
    objs = list(objs)
    if host in LOCAL_HOSTS:
        return None
    parts = re.sub(r"\.svc(\.cluster\.local)?$", "", host).split(".")
    pod = None
    if len(parts) == 3:
        pod, service, namespace = parts
    elif len(parts) == 2:
        service, namespace = parts
    elif len(parts) == 1:
        service, namespace = parts[0], NAMESPACE
    else:
        return f"{host} is no Service name"
    if namespace != NAMESPACE:
        return f"{host} is in namespace {namespace}, not {NAMESPACE}"
    svc = find(objs, "Service", service)
    if svc is None:
        return f"no Service {service}"
    if pod is not None:
        sets = [s for s in of_kind(objs, "StatefulSet") if s["spec"].get("serviceName") == service]
        if not sets or svc["spec"].get("clusterIP") != "None":
            return f"{service} governs no StatefulSet: {host} names no pod"
        names = {
            f"{s['metadata']['name']}-{i}"
            for s in sets
            for i in range(s["spec"].get("replicas", 1))
        }
        if pod != "$(POD_NAME)" and pod not in names:
            return f"no pod {pod} behind {service} (pods: {', '.join(sorted(names))})"
    ports = [p["port"] for p in svc["spec"].get("ports") or []]
    if port not in ports:
        return f"Service {service} has no port {port} (its ports: {ports})"
    return None


def container_env(objs: Iterable[Obj], c: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env
    (literal values and ConfigMap keys; Secrets and the downward API are left out)."""
    objs = list(objs)
    out: dict[str, str] = {}
    for env_from in c.get("envFrom") or []:
        ref = env_from.get("configMapRef")
        cm = find(objs, "ConfigMap", ref["name"]) if ref else None
        for key, value in ((cm or {}).get("data") or {}).items():
            out[env_from.get("prefix", "") + key] = str(value)
    for env in c.get("env") or []:
        if "value" in env:
            out[env["name"]] = str(env["value"])
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            cm = find(objs, "ConfigMap", ref["name"])
            if cm and ref["key"] in (cm.get("data") or {}):
                out[env["name"]] = str(cm["data"][ref["key"]])
    return out


def check_addresses(objs: Iterable[Obj]) -> list[str]:
    """Every host:port in a container's environment and in a ScaledObject's Kafka trigger is a
    port of a Service of this very build (overlay and components as combined)."""
    objs = list(objs)
    errors: list[str] = []
    for obj in workloads(objs):
        template = pod_template(obj)
        assert template is not None
        for _, c in containers(template["spec"]):
            for key, value in container_env(objs, c).items():
                for host, port in addresses_in(value):
                    why = resolve_address(objs, host, port)
                    if why:
                        errors.append(f"{ident(obj)} {c['name']}: {key}={value}: {why}")
    for so in of_kind(objs, "ScaledObject"):
        for trigger in so["spec"].get("triggers") or []:
            value = (trigger.get("metadata") or {}).get("bootstrapServers", "")
            for host, port in addresses_in(value):
                why = resolve_address(objs, host, port)
                if why:
                    errors.append(f"{ident(so)}: bootstrapServers={value}: {why}")
    return errors


SEED_MODULE = "infra.k8s.seed_weights"


def _seed_weights(objs: list[Obj], spec: Mapping[str, Any], service: str) -> Any:
    """The weights an init container of the pod spec puts into Consul for ``service`` before
    the app starts (infra.k8s.seed_weights --service S --file F, F from a ConfigMap), or a
    string saying what is missing."""
    from gateway.discovery import WeightsError, parse_weights

    for c in spec.get("initContainers") or []:
        argv = [*(c.get("command") or []), *(c.get("args") or [])]
        if SEED_MODULE not in argv:
            continue
        flags = dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--"))
        if flags.get("service") != service:
            continue
        path = flags.get("file", "")
        directory, _, name = path.rpartition("/")
        mount = next(
            (m for m in c.get("volumeMounts") or [] if m["mountPath"].rstrip("/") == directory),
            None,
        )
        volume = next(
            (v for v in spec.get("volumes") or [] if mount and v["name"] == mount["name"]), None
        )
        cm_name = ((volume or {}).get("configMap") or {}).get("name")
        cm = find(objs, "ConfigMap", cm_name) if cm_name else None
        if cm is None or name not in (cm.get("data") or {}):
            return f"init container {c['name']}: {path} comes from no ConfigMap key"
        try:
            return parse_weights(cm["data"][name])
        except WeightsError as exc:
            return f"ConfigMap {cm_name} {name}: {exc}"
    return f"no init container runs {SEED_MODULE} --service={service}"


def check_weights_before_traffic(objs: Iterable[Obj]) -> list[str]:
    """A Deployment of a service's second version (``orders-v2``) puts the service's weights
    into Consul before its pods can register there: the gateway spreads traffic over every
    passing version of a service without weights. The weights name both versions."""
    objs = list(objs)
    errors: list[str] = []
    for dep in of_kind(objs, "Deployment"):
        labels = template_labels(dep)
        service, version = labels.get(NAME_LABEL), labels.get(VERSION_LABEL)
        if not _is_app(dep) or not service or dep["metadata"]["name"] == service:
            continue
        stable = find(objs, "Deployment", service)
        stable_version = template_labels(stable).get(VERSION_LABEL) if stable else None
        weights = _seed_weights(objs, dep["spec"]["template"]["spec"], service)
        where = f"{ident(dep)} ({service} {version})"
        if isinstance(weights, str):
            errors.append(
                f"{where}: nothing puts mesh/traffic/{service} into Consul before its pods "
                f"register ({weights}); the gateway would send it traffic at once"
            )
        elif not {version, stable_version} <= set(weights):
            errors.append(
                f"{where}: the weights {weights} do not name {stable_version} and {version}"
            )
    return errors


def check_metric_sources(objs: Iterable[Obj]) -> list[str]:
    """Every autoscaler metric has a source here: CPU/memory utilization needs a request on
    every container of the pods it averages (and metrics-server, which the cluster brings);
    no adapter serves Pods, Object or External metrics but KEDA, for its ScaledObjects; a Kafka
    trigger's topic is one the topic Job creates."""
    objs = list(objs)
    errors: list[str] = []
    topics_cm = next(
        (c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("kafka-topics")),
        None,
    )
    topics = {
        line.split()[0]
        for line in ((topics_cm or {}).get("data") or {}).get("topics.txt", "").splitlines()
        if line.strip()
    }

    def requests(scaler: Obj, resource: str) -> None:
        target = find(objs, "Deployment", scaler["spec"]["scaleTargetRef"]["name"])
        if target is None:
            return  # check_references reports it
        for c in target["spec"]["template"]["spec"]["containers"]:
            if resource not in ((c.get("resources") or {}).get("requests") or {}):
                errors.append(
                    f"{ident(scaler)}: {resource} utilization of {ident(target)}, whose "
                    f"container {c['name']} requests no {resource}"
                )

    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics") or []:
            kind = metric.get("type")
            if kind == "Resource":
                if metric["resource"]["target"].get("type") == "Utilization":
                    requests(hpa, metric["resource"]["name"])
            else:
                errors.append(f"{ident(hpa)}: no metrics adapter here serves {kind} metrics")
    for so in of_kind(objs, "ScaledObject"):
        for trigger in so["spec"].get("triggers") or []:
            meta = trigger.get("metadata") or {}
            if trigger["type"] in ("cpu", "memory") and trigger.get("metricType") == "Utilization":
                requests(so, trigger["type"])
            if trigger["type"] == "kafka" and meta.get("topic") not in topics:
                errors.append(f"{ident(so)}: topic {meta.get('topic')} is created by no Job here")
    return errors
