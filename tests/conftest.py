"""Session fixtures: the embedded infrastructure, started once per test run on loopback.

Real parts, not mocks: tansu speaks the Kafka protocol, valkey/redis is a real server, and
Consul is a real agent when ``consul`` is on PATH or ``CONSUL_HTTP_ADDR`` is set, else the
project's development registry. Setting ``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL`` or
``CONSUL_HTTP_ADDR`` runs the same tests against those instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.embedded import Endpoints, Infra  # noqa: E402


def _report(message: str) -> None:
    sys.stderr.write(f"[infra] {message}\n")


@pytest.fixture(scope="session")
def mesh_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder for this run only: tests never touch the developer's ``.mesh/``."""
    return tmp_path_factory.mktemp("mesh")


@pytest.fixture(scope="session")
def infra_stack(mesh_home: Path) -> Iterator[Infra]:
    stack = Infra(mesh_home, environ=dict(os.environ), progress=_report)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def infra(infra_stack: Infra) -> Endpoints:
    """Addresses of Kafka, Redis and Consul; ``infra.env()`` for a service's environment."""
    return infra_stack.endpoints


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Endpoints) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(infra: Endpoints) -> str:
    return infra.redis_url


@pytest.fixture(scope="session")
def consul_addr(infra: Endpoints) -> str:
    return infra.consul_addr
