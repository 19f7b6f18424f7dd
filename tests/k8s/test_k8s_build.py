"""Every overlay and component combination builds, and every object in it validates against the
Kubernetes API schemas (kubernetes-validate, bundled schemas; strict: no unknown fields)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from k8s_builds import (
    BUILD_SPECS,
    K8S,
    TEST_SECRETS,
    Build,
    BuildSpec,
    get_build,
    kustomize,
    prepare,
)
from k8s_checks import NAMESPACE, Obj, check_scaled_object_shape, ident, of_kind
from kubernetes_validate import utils as kv_utils

# Custom resources: kubernetes-validate has no schema for them; their shape is checked by
# check_scaled_object_shape instead. Anything else without a schema is an error.
CUSTOM_RESOURCES = {("keda.sh/v1alpha1", "ScaledObject")}

# The oldest Kubernetes this project supports, and the newest schemas the package bundles.
OLDEST_SUPPORTED = "1.30"


def schema_versions() -> list[str]:
    newest = kv_utils.latest_version()
    assert kv_utils.major_minor(newest) >= OLDEST_SUPPORTED, newest
    return [OLDEST_SUPPORTED, kv_utils.major_minor(newest)]


@cache
def _validate(serialized: str, version: str) -> str | None:
    """None when the object is valid, else the error (cached: builds share most objects)."""
    obj = json.loads(serialized)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return f"{ident(obj)} against {version}: {path}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return f"{ident(obj)}: no schema ({e.message})"
    return None


def validate_object(obj: Obj) -> list[str]:
    if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
        return []
    serialized = json.dumps(obj, sort_keys=True)
    return [err for v in schema_versions() if (err := _validate(serialized, v))]


def test_every_build_succeeds(build: Build) -> None:
    objs = build.objects
    assert objs, "the build is empty"
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names)), "an object appears twice"
    outside = [
        ident(o)
        for o in objs
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE
    ]
    assert not outside, f"objects outside namespace {NAMESPACE}: {outside}"
    kinds = {o["kind"] for o in objs}
    assert ("NetworkPolicy" in kinds) == ("network-policies" in build.component_names)
    assert ("ScaledObject" in kinds) == ("keda" in build.component_names)
    assert ("Job" in kinds) and ("StatefulSet" in kinds)


@pytest.mark.parametrize("spec_id", [s.id for s in BUILD_SPECS])
def test_every_object_matches_the_kubernetes_schemas(builds: dict[str, Any], spec_id: str) -> None:
    build = get_build(builds, spec_id)
    errors = [err for obj in build.objects for err in validate_object(obj)]
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_misspelt_field(builds: dict[str, Any]) -> None:
    build = get_build(builds, "dev[plain]")
    deployment = copy.deepcopy(of_kind(build.objects, "Deployment")[0])
    spec = deployment["spec"]["template"]["spec"]
    spec["contianers"] = spec.pop("containers")
    assert validate_object(deployment), "a misspelt field went through"
    service = copy.deepcopy(of_kind(build.objects, "Service")[0])
    service["spec"]["ports"][0]["port"] = "eighty"
    assert validate_object(service), "a string port went through"


def test_only_known_custom_resources_skip_the_schemas() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_object(unknown), "an unknown kind was not reported"


@pytest.mark.parametrize("spec_id", [s.id for s in BUILD_SPECS if "keda" in s.components])
def test_scaled_objects_have_the_keda_shape(builds: dict[str, Any], spec_id: str) -> None:
    build = get_build(builds, spec_id)
    scaled = of_kind(build.objects, "ScaledObject")
    assert {so["metadata"]["name"] for so in scaled} == {
        "orders",
        "inventory",
        "payments",
        "notifications",
    }
    errors = [err for so in scaled for err in check_scaled_object_shape(so)]
    # The HPA behavior KEDA passes on must be a valid autoscaling/v2 behavior.
    for so in scaled:
        behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": so["metadata"]["name"], "namespace": NAMESPACE},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                "maxReplicas": so["spec"]["maxReplicaCount"],
                "behavior": behavior,
            },
        }
        errors += validate_object(hpa)
    assert not errors, "\n".join(errors)


def test_scaled_object_shape_check_catches_mistakes(builds: dict[str, Any]) -> None:
    good = of_kind(get_build(builds, "dev[keda]").objects, "ScaledObject")[0]
    assert check_scaled_object_shape(good) == []
    broken = copy.deepcopy(good)
    kafka = next(t for t in broken["spec"]["triggers"] if t["type"] == "kafka")
    del kafka["metadata"]["consumerGroup"]
    kafka["metadata"]["lagTreshold"] = "10"
    broken["spec"]["minReplicaCount"] = "two"
    broken["spec"]["triggers"].append({"type": "cpu", "metadata": {"value": 70}})
    errors = check_scaled_object_shape(broken)
    assert any("consumerGroup" in e for e in errors), errors
    assert any("lagTreshold" in e for e in errors), errors
    assert any("minReplicaCount" in e for e in errors), errors
    assert any("metricType" in e for e in errors), errors


def _scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    return root


def test_a_missing_secrets_env_fails_the_build_naming_the_file(tmp_path: Path) -> None:
    root = _scratch_copy(tmp_path)
    result = kustomize(root / "overlays" / "dev")
    assert result.returncode != 0
    assert "secrets.env" in result.stderr


def test_gen_secrets_writes_every_key_once_and_privately(tmp_path: Path) -> None:
    root = _scratch_copy(tmp_path)
    script = root / "scripts" / "gen-secrets.sh"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    first = subprocess.run(
        ["bash", str(script), "prod"], capture_output=True, text=True, env=env, check=False
    )
    assert first.returncode == 0, first.stderr
    target = root / "overlays" / "prod" / "secrets.env"
    written = target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in written.splitlines() if line and not line.startswith("#")
    )
    example = root / "overlays" / "prod" / "secrets.env.example"
    wanted = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert set(values) == wanted
    assert all(len(v) == 32 for v in values.values()) and len(set(values.values())) == len(values)
    again = subprocess.run(
        ["bash", str(script), "prod"], capture_output=True, text=True, env=env, check=False
    )
    assert again.returncode == 0 and target.read_text() == written, "an existing file was rewritten"
    bad = subprocess.run(
        ["bash", str(script), "staging"], capture_output=True, text=True, env=env, check=False
    )
    assert bad.returncode != 0 and "staging" in bad.stderr
    assert kustomize(root / "overlays" / "prod").returncode == 0


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_secret_example_lists_exactly_the_keys_the_manifests_use(
    builds: dict[str, Any], overlay: str
) -> None:
    build = get_build(builds, f"{overlay}[all]")
    used = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for w in build.objects
        if w["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in w["spec"]["template"]["spec"]["containers"]
        for env in c.get("env") or []
        if "secretKeyRef" in (env.get("valueFrom") or {})
    }
    example = (K8S / "overlays" / overlay / "secrets.env.example").read_text()
    listed = {
        line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    assert used == listed


def test_the_test_secrets_cover_the_example() -> None:
    example = (K8S / "overlays" / "dev" / "secrets.env.example").read_text()
    listed = {
        line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    assert set(TEST_SECRETS) == listed


def test_keda_before_bluegreen_fails_the_build_loudly(k8s_copy: Path) -> None:
    """The documented order matters: keda removes the payments HPA that bluegreen reads."""
    wrong = BuildSpec("dev", ("keda", "bluegreen"))
    result = kustomize(prepare(k8s_copy, wrong))
    assert result.returncode != 0
    assert "HorizontalPodAutoscaler" in result.stderr and "payments" in result.stderr
