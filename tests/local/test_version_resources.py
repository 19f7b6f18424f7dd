"""The resources of a version (infra/versions): the notation, the defaults, one-line errors,
and how compose and Kubernetes write them. Pure parsing: no process runs here."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.runtime.versions import (
    Resources,
    VersionError,
    cpu_text,
    memory_text,
    parse_cpu,
    parse_memory,
    version_env,
    version_resources,
)

SHIPPED = Path(__file__).resolve().parents[2] / "infra" / "versions"
MIB = 1024**2


def test_quantities_in_kubernetes_notation() -> None:
    assert parse_memory("128Mi") == 128 * MIB
    assert parse_memory("1Gi") == 1024 * MIB
    assert parse_memory("500M") == 500_000_000
    assert parse_memory("134217728") == 128 * MIB
    assert parse_cpu("500m") == 500
    assert parse_cpu("0.5") == 500
    assert parse_cpu("2") == 2000
    assert (memory_text(256 * MIB), memory_text(1024 * MIB), memory_text(1000)) == (
        "256Mi",
        "1Gi",
        "1000",
    )
    assert (cpu_text(500), cpu_text(2000)) == ("500m", "2")
    for bad in ("128MB", "-1Mi", "lots", ""):
        with pytest.raises(ValueError, match="memory quantity"):
            parse_memory(bad)
    with pytest.raises(ValueError, match="CPU quantity"):
        parse_cpu("half")


def test_a_version_file_overrides_the_defaults_line_by_line(tmp_path: Path) -> None:
    (tmp_path / "defaults.env").write_text(
        "# every version\nREQUESTS_MEMORY=128Mi\nREQUESTS_CPU=100m\n"
        "LIMITS_MEMORY=256Mi\nLIMITS_CPU=500m\n"
    )
    (tmp_path / "web-v4.env").write_text("LEAK=1\nLIMITS_MEMORY=none\n")
    (tmp_path / "web-v5.env").write_text("LIMITS_MEMORY=160Mi\nLIMITS_CPU=1\n")
    plain = version_resources(tmp_path, "web", "v2")  # no file: the defaults
    assert plain == Resources(128 * MIB, 100, 256 * MIB, 500)
    assert version_resources(tmp_path, "web", "v4") == Resources(128 * MIB, 100, None, 500)
    assert version_resources(tmp_path, "web", "v5") == Resources(128 * MIB, 100, 160 * MIB, 1000)
    # Resource lines are the runtime's: they never reach the process environment.
    assert version_env(tmp_path, "web", "v4") == {"LEAK": "1"}
    # No defaults file: only what the version declares.
    (tmp_path / "defaults.env").unlink()
    assert version_resources(tmp_path, "web", "v2") == Resources()


def test_bad_resources_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "web-v6.env").write_text("LIMITS_MEMORY=lots\n")
    with pytest.raises(VersionError, match=r"web-v6.env: LIMITS_MEMORY: expected a memory") as bad:
        version_resources(tmp_path, "web", "v6")
    assert "\n" not in str(bad.value)
    (tmp_path / "web-v7.env").write_text("REQUESTS_MEMORY=512Mi\nLIMITS_MEMORY=256Mi\n")
    with pytest.raises(VersionError, match="the memory request is above its limit"):
        version_resources(tmp_path, "web", "v7")
    (tmp_path / "defaults.env").write_text("LIMITS_MEMORY=256Mi\nLOG_LEVEL=DEBUG\n")
    with pytest.raises(VersionError, match="not LOG_LEVEL"):
        version_resources(tmp_path, "web", "v1")


def test_compose_and_kubernetes_write_the_same_resources() -> None:
    resources = Resources(128 * MIB, 100, 256 * MIB, 500)
    assert resources.k8s() == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    # docker's "m" is MiB; 1024 shares a core, as kubelet turns a CPU request into shares.
    assert resources.compose() == {
        "mem_limit": "256m",
        "mem_reservation": "128m",
        "cpus": 0.5,
        "cpu_shares": 102,
    }
    assert Resources(memory_limit=1000).compose() == {"mem_limit": 1000}
    assert Resources().k8s() == {} and Resources().compose() == {}


def test_the_shipped_versions_and_defaults() -> None:
    """The defaults match what k8s/base declares for every app; the lessons' releases say
    what the lessons need of them."""
    defaults = version_resources(SHIPPED, "orders", "v1")
    assert defaults.k8s() == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    base = (SHIPPED.parents[1] / "k8s" / "base" / "apps" / "orders.yaml").read_text()
    assert "memory: 256Mi" in base and "cpu: 500m" in base
    for path in SHIPPED.glob("*-v*.env"):
        service, version = path.stem.rsplit("-", 1)
        version_resources(SHIPPED, service, version)  # every file parses
    assert version_resources(SHIPPED, "orders", "v4").memory_limit is None
    assert version_resources(SHIPPED, "orders", "v5").memory_limit == 128 * MIB
    assert version_env(SHIPPED, "orders", "v4")["LEAK_BYTES_PER_REQUEST"]
    assert version_env(SHIPPED, "orders", "v6")["READINESS_PROBE"] == "none"
    assert version_env(SHIPPED, "orders", "v7")["READINESS_PROBE"] == "http"


# -- one source of truth: what the manifests and docker-compose.yml write by hand ------------
APPS = ("gateway", "orders", "inventory", "payments", "notifications")
REPO = SHIPPED.parents[1]


@pytest.mark.parametrize("service", APPS)
def test_k8s_manifests_declare_the_resources_of_the_version_files(service: str) -> None:
    """k8s/base/apps/*.yaml are plain manifests (kubectl apply -k works without meshctl), so
    they repeat v1's resources; this fails the moment they disagree with infra/versions/."""
    import yaml

    docs = list(
        yaml.safe_load_all((REPO / "k8s" / "base" / "apps" / f"{service}.yaml").read_text())
    )
    [deployment] = [d for d in docs if d and d.get("kind") == "Deployment"]
    [container] = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if any(e.get("name") == "SERVICE_VERSION" for e in c.get("env") or [])
    ]
    version = next(e["value"] for e in container["env"] if e["name"] == "SERVICE_VERSION")
    declared = {
        section: {key: str(value) for key, value in values.items()}
        for section, values in container["resources"].items()
    }
    assert declared == version_resources(SHIPPED, service, version).k8s(), (
        f"k8s/base/apps/{service}.yaml: resources differ from infra/versions/ "
        f"(defaults.env, {service}-{version}.env)"
    )


@pytest.mark.parametrize("service", APPS)
def test_docker_compose_yml_declares_the_limits_of_the_version_files(service: str) -> None:
    """docker-compose.yml keeps mem_limit/cpus for `docker compose up` by hand; meshctl up
    writes the version files' (resources.yml over it). Both must say the same."""
    import yaml

    definition = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]
    version = definition["environment"]["SERVICE_VERSION"]
    wanted = version_resources(SHIPPED, service, version).compose()
    assert str(definition["mem_limit"]) == wanted["mem_limit"]
    assert float(definition["cpus"]) == wanted["cpus"]
