"""Fixtures of the k8s adapter tests: a fake API server per test and a runtime pointed at it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

# The fake server sits beside this file (tests/k8s_adapter is no package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_kube_api import FakeApiServer

from infra.k8s.runtime import K8sRuntime


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def runtime(api: FakeApiServer) -> Iterator[K8sRuntime]:
    configuration = client.Configuration(host=api.url)
    with client.ApiClient(configuration) as api_client:
        yield K8sRuntime(
            namespace="mesh",
            api_client=api_client,
            environ={"MESH_API_KEY": "test-key", "MESH_CONSUL_ADDR": "http://127.0.0.1:18500"},
        )
