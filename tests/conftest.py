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
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.embedded import Endpoints, Infra  # noqa: E402
from infra.embedded.parts import redis_binary  # noqa: E402
from infra.embedded.probes import redis_answers  # noqa: E402
from infra.process import ManagedProcess, free_port, wait_until  # noqa: E402


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


class RedisServer:
    """A Redis server of a test's own on a free loopback port, for tests that restart it.

    :meth:`restart` is a real restart at the same address: ``SHUTDOWN SAVE`` (the data is
    kept, as by a Redis with persistence), then the same command line again. What a restart
    forgets, it forgets: connections, and the Lua script cache (never persisted).
    """

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary, _ = redis_binary(os.environ)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(home)]
        argv += ["--save", "", "--appendonly", "no"]
        self.process = ManagedProcess(
            f"redis-{self.port}", argv, log_path=home / "redis.log", cwd=home
        )

    def start(self) -> None:
        self.process.start()
        wait_until(
            lambda: redis_answers(self.url),
            timeout=10,
            what=f"redis on {self.url}",
            alive=self.process.alive,
        )

    def restart(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        wait_until(lambda: not self.process.alive(), timeout=10, what="redis stopped")
        self.start()

    def errors(self, prefix: str) -> int:
        """How many replies of this server (since it started) were errors ``prefix ...``."""
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            stats = client.info("errorstats")
        finally:
            client.close()
        return int(stats.get(f"errorstat_{prefix}", {}).get("count", 0))

    def stop(self) -> None:
        self.process.stop(timeout=5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis server of this test alone (its script cache empty), restartable."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
