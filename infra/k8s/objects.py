"""The labels and annotations the k8s runtime reads and writes, and what it derives from the
objects the API returns (pure functions: no API call here)."""

from __future__ import annotations

import copy
import json
from typing import Any

from infra.local.catalog import DEFAULT_PLATFORM, load_platform
from infra.runtime.versions import version_resources

NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
TIER = "mesh.demo/tier"  # app or infra (k8s/base)
VERSION = "mesh.demo/version"
ROLLOUT = "mesh.demo/rollout"  # the record (JSON) of a rolling rollout, on the Deployment
VERSION_OF = "mesh.demo/version-of"  # on a versioned Deployment: its service's Deployment
VERSION_ENV = "SERVICE_VERSION"

APPS = f"{TIER}=app"
INFRA = f"{TIER}=infra"


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def rollout_record(deployment: Any) -> dict[str, Any] | None:
    raw = (deployment.metadata.annotations or {}).get(ROLLOUT)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def deployment_version(deployment: Any) -> str:
    labels = deployment.metadata.labels or {}
    return str(labels.get(VERSION) or template_version(deployment.spec.template))


def template_version(template: Any) -> str:
    """The version a pod template (or pod) runs: the annotation a rollout sets, else the label,
    else the env. The label of the stable Deployment's pods cannot change (it is in the
    selector), so after a rollout the annotation is the truth."""
    meta = template.metadata
    version = (meta.annotations or {}).get(VERSION) or (meta.labels or {}).get(VERSION)
    if version:
        return str(version)
    for container in template.spec.containers or []:
        for env in container.env or []:
            if env.name == VERSION_ENV and env.value:
                return str(env.value)
    return "v1"


def version_container(deployment: Any) -> str:
    """The container that reads ``SERVICE_VERSION`` (else the first one)."""
    containers = deployment.spec.template.spec.containers or []
    for container in containers:
        if any(env.name == VERSION_ENV for env in container.env or []):
            return str(container.name)
    if not containers:
        raise ValueError(f"deployment {deployment.metadata.name} has no container")
    return str(containers[0].name)


def container_resources(service: str, version: str) -> dict[str, dict[str, str]]:
    """The container's ``resources`` of ``service`` at ``version``: the version files
    (``infra/versions/``, what k8s/base/apps/*.yaml must agree with; a test checks)."""
    versions_dir = load_platform(DEFAULT_PLATFORM).versions_dir
    return version_resources(versions_dir, service, version).k8s()


def resources_patch(service: str, version: str) -> dict[str, dict[str, str | None]]:
    """A strategic-merge patch of a container's ``resources`` to the version's: what the
    version does not declare (``LIMITS_MEMORY=none``) is deleted (``None``)."""
    wanted = container_resources(service, version)
    return {
        section: {key: wanted.get(section, {}).get(key) for key in ("cpu", "memory")}
        for section in ("requests", "limits")
    }


def versioned_deployment(
    stable: dict[str, Any], service: str, version: str, replicas: int
) -> dict[str, Any]:
    """``<service>-<version>``: the stable Deployment (as the API returned it, camelCase) with
    the version changed, owned by the stable Deployment."""
    meta, spec = stable["metadata"], stable["spec"]
    template = copy.deepcopy(spec["template"])
    template_meta = template.setdefault("metadata", {})
    template_meta.setdefault("labels", {})[VERSION] = version
    template_meta.setdefault("annotations", {})[VERSION] = version
    containers = template["spec"]["containers"]
    container = next(
        (c for c in containers if any(e.get("name") == VERSION_ENV for e in c.get("env") or [])),
        containers[0],
    )
    env = [e for e in container.get("env") or [] if e.get("name") != VERSION_ENV]
    # First, so that $(SERVICE_VERSION) in later variables (OTEL_RESOURCE_ATTRIBUTES) resolves.
    container["env"] = [{"name": VERSION_ENV, "value": version}, *env]
    container["resources"] = container_resources(service, version)
    body_spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {**spec["selector"].get("matchLabels", {}), VERSION: version}},
        "template": template,
    }
    for key in ("strategy", "minReadySeconds", "progressDeadlineSeconds", "revisionHistoryLimit"):
        if key in spec:
            body_spec[key] = copy.deepcopy(spec[key])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{service}-{version}",
            "labels": {**(meta.get("labels") or {}), VERSION: version, MANAGED_BY: "meshctl"},
            "annotations": {VERSION_OF: meta["name"]},
            # Deleting a service's Deployment deletes its versions, as it deletes its ReplicaSets.
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": body_spec,
    }
