"""What the compose runtime writes for a version (infra/compose/versions.py), without an
engine: the resources of infra/versions/ as compose keys, for the versions a rollout starts
(the override files) and for the ones docker-compose.yml declares (resources.yml), and the
port-only healthcheck of a release deployed without a readiness probe. The real engine's
view of the same keys (docker inspect) is in test_compose_runtime.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.compose.project import COMPOSE_FILE, ComposeProject
from infra.compose.versions import PORT_ONLY_CHECK, Versions
from infra.local.catalog import DEFAULT_PLATFORM, load_platform


@pytest.fixture
def versions(tmp_path: Path) -> Versions:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    project = ComposeProject("meshunit", (COMPOSE_FILE,), env_dir, tmp_path / "state", {})
    found = Versions(project, load_platform(DEFAULT_PLATFORM))
    # What `docker compose config` resolves (PyYAML resolves the `<<` merge keys too).
    found._config = yaml.safe_load(COMPOSE_FILE.read_text())
    return found


def override(versions: Versions, service: str, version: str) -> dict[str, Any]:
    name = versions.ensure(service, version)
    loaded = yaml.safe_load(versions.override_path(service, version).read_text())
    return dict(loaded["services"][name])


def test_a_rolled_out_version_gets_the_limits_of_its_file(versions: Versions) -> None:
    v5 = override(versions, "orders", "v5")  # LIMITS_MEMORY=128Mi, the rest defaults.env's
    assert (v5["mem_limit"], v5["mem_reservation"]) == ("128m", "128m")
    assert v5["cpus"] == 0.5 and "cpu_shares" not in v5  # see versions.UNWRITTEN
    v4 = override(versions, "orders", "v4")  # LIMITS_MEMORY=none: not docker-compose.yml's 256m
    assert "mem_limit" not in v4 and v4["mem_reservation"] == "128m"
    v2 = override(versions, "orders", "v2")  # no file: defaults.env
    assert (v2["mem_limit"], v2["cpus"]) == ("256m", 0.5)


def test_a_release_without_readiness_probe_is_checked_on_its_port_only(
    versions: Versions,
) -> None:
    v6 = override(versions, "orders", "v6")  # READINESS_PROBE=none
    assert v6["healthcheck"]["test"] == PORT_ONLY_CHECK
    assert v6["healthcheck"]["interval"] == "5s"  # the rest of the service's own healthcheck
    v7 = override(versions, "orders", "v7")  # the probe on /readyz, as docker-compose.yml says
    assert v7["healthcheck"]["test"] == ["CMD", "python", "/opt/mesh/healthcheck.py"]


def test_resources_file_covers_the_declared_versions(versions: Versions) -> None:
    path = versions.write_resources()
    services = yaml.safe_load(path.read_text())["services"]
    assert set(services) == {"gateway", "orders", "inventory", "payments", "notifications"}
    assert services["orders"] == {
        "mem_limit": "256m",
        "cpus": 0.5,
        "mem_reservation": "128m",
    }
    assert services["gateway"]["cpus"] == 1.0  # infra/versions/gateway-v1.env
    # Read after the base files, before the rollouts' overrides.
    versions.ensure("orders", "v2")
    files = versions.project.files()
    assert files == [COMPOSE_FILE, path, versions.override_path("orders", "v2")]
