"""Fixtures of the pod-spec conformance tests: the dev overlay with every component, rendered
as kubectl would, and (with ``MESH_K8S_PODS=1``, which ``make test-k8s-pods`` sets after it
made sure of an engine and the images) its pods running on the Docker engine."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "k8s")]

from pods_support import ALL, project_version, render  # noqa: E402
from podspec import Obj  # noqa: E402
from stack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return render(tmp_path_factory.mktemp("render"), ALL)


@pytest.fixture(scope="session")
def stack(rendered: list[Obj]) -> Iterator[Stack]:
    if os.environ.get("MESH_K8S_PODS") != "1":
        pytest.skip("the pods run on a Docker engine: make test-k8s-pods")
    prefix = os.environ.get("MESH_IMAGE_PREFIX", "mesh-demo")
    stack = Stack(rendered, uuid.uuid4().hex[:8], prefix, project_version())
    try:
        stack.up(later=frozenset({("Job", "locust-drill")}))
        stack.probe_all()
        yield stack
    finally:
        stack.down()
