"""The render the pod tests run: the dev overlay with every component, built by kubectl
from a scratch copy of k8s/ with the test secrets (a module of its own, not the conftest, so
that test modules import it by a name no other directory's conftest shadows)."""

from __future__ import annotations

import shutil
from pathlib import Path

from k8s_builds import (
    COMPONENTS,
    K8S,
    OVERLAYS,
    BuildSpec,
    kubectl,
    kustomize,
    prepare,
    write_secrets,
)
from k8s_checks import load_documents
from podspec import Obj

REPO = Path(__file__).resolve().parents[2]
ALL = BuildSpec("dev", COMPONENTS)


def render(tmp: Path, spec: BuildSpec) -> list[Obj]:
    kubectl()
    root = tmp / "k8s"
    if not root.exists():
        shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
        for overlay in OVERLAYS:
            write_secrets(root / "overlays" / overlay)
    built = kustomize(prepare(root, spec))
    assert built.returncode == 0, built.stderr
    return load_documents(built.stdout)


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise AssertionError("no version in pyproject.toml")
