"""Fixtures of the k8s adapter tests: a fake API server per test, the project's development
registry as Consul (a real process on a free port, its own for this run, so no test ever
writes the weights of someone's running platform), and a runtime pointed at both."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import consul
import pytest
from kubernetes import client

# The fake server sits beside this file (tests/k8s_adapter is no package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_kube_api import FakeApiServer, FakeCluster

from infra.k8s.runtime import K8sRuntime
from infra.process import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def registry() -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "infra.consul.devregistry", "--host", "127.0.0.1"]
    process = subprocess.Popen([*argv, "--port", str(port), "--log-level", "warning"], cwd=ROOT)
    kv = consul.Consul(host="127.0.0.1", port=port)

    def answers() -> bool:
        try:
            kv.kv.get("mesh/")
        except Exception:
            return False
        return True

    try:
        wait_until(answers, timeout=20, what="devregistry", alive=lambda: process.poll() is None)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def consul_kv(registry: str) -> Iterator[consul.Consul]:
    host, port = registry.removeprefix("http://").split(":")
    kv = consul.Consul(host=host, port=int(port))
    kv.kv.delete("mesh/", recurse=True)
    yield kv
    kv.kv.delete("mesh/", recurse=True)


@contextmanager
def runtime_for(api: FakeApiServer, registry: str, **environ: str) -> Iterator[K8sRuntime]:
    """A runtime on the fake API server and the registry; closed (its rollout thread stopped,
    whatever is unfinished rolled back) when the test ends."""
    configuration = client.Configuration(host=api.url)
    with client.ApiClient(configuration) as api_client:
        runtime = K8sRuntime(
            namespace="mesh",
            api_client=api_client,
            environ={"MESH_API_KEY": "test-key", "MESH_CONSUL_ADDR": registry, **environ},
            poll_interval=0.005,
        )
        try:
            yield runtime
        finally:
            runtime.close()


@pytest.fixture
def api(registry: str) -> Iterator[FakeApiServer]:
    with FakeApiServer(FakeCluster(consul_addr=registry)) as server:
        yield server


@pytest.fixture
def runtime(api: FakeApiServer, registry: str, consul_kv: consul.Consul) -> Iterator[K8sRuntime]:
    with runtime_for(api, registry) as runtime:
        yield runtime
