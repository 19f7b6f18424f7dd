"""Session fixtures of the k8s tests: the builds, made once, in parallel, from a scratch copy
of k8s/ that holds throw-away secrets.env files (the real ones are git-ignored and may not
exist)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# The helper modules sit beside this file (tests/k8s is no package); make them importable
# whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_builds import (
    BUILD_SPECS,
    K8S,
    OVERLAYS,
    Build,
    get_build,
    kubectl,
    kustomize,
    prepare,
    write_secrets,
)
from k8s_checks import load_documents


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of k8s/ with test secrets in every overlay."""
    kubectl()
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in OVERLAYS:
        write_secrets(root / "overlays" / overlay)
    return root


@pytest.fixture(scope="session")
def builds(k8s_copy: Path) -> dict[str, Build | str]:
    """Every BuildSpec built once: spec id -> Build, or the error text of a failed build."""
    dirs = {spec.id: prepare(k8s_copy, spec) for spec in BUILD_SPECS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(dirs, pool.map(kustomize, dirs.values()), strict=True))
    out: dict[str, Build | str] = {}
    for spec in BUILD_SPECS:
        result = results[spec.id]
        if result.returncode != 0:
            out[spec.id] = result.stderr.strip() or f"exit code {result.returncode}"
        else:
            out[spec.id] = Build(spec, load_documents(result.stdout))
    return out


@pytest.fixture(params=[s.id for s in BUILD_SPECS])
def build(request: pytest.FixtureRequest, builds: dict[str, Build | str]) -> Iterator[Build]:
    yield get_build(builds, request.param)
