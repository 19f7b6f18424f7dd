"""docker-compose.yml, its test override and the Dockerfiles, checked without a Docker engine.

- ``docker-compose config -q`` (when docker-compose or the v2 plugin is installed; on a fresh
  machine it may not be, and then only the schema check runs: the skip says so);
- the compose-spec JSON schema, as vendored by the ``check-jsonschema`` package (compose-spec
  is Apache-2.0; the package ships the schema with its license);
- the conventions of the issue: healthchecks, restart policies, limits, log rotation,
  read-only filesystems, 127.0.0.1 ports, pinned tags (the same as k8s/base), graceful stop;
- the Dockerfiles: one identical builder stage, non-root, HEALTHCHECK without curl, exec form.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_support import (
    ROOT,
    ComposeProject,
    compose_cli,
    interpolate,
)

from infra.compose.project import COMPOSE_FILE, TEST_OVERRIDE

APP_SERVICES = ("gateway", "orders", "inventory", "payments", "notifications")
INFRA_SERVICES = ("kafka", "consul", "redis")
OBSERVABILITY = ("otel-collector", "jaeger", "prometheus", "grafana")
# FROM-scratch images (nothing to exec) and the one-shot topic job: no Docker healthcheck.
NO_HEALTHCHECK = {"otel-collector", "jaeger", "kafka-init"}
PROJECT_DOCKERFILES = {
    "orders": ROOT / "services/orders/Dockerfile",
    "inventory": ROOT / "services/inventory/Dockerfile",
    "payments": ROOT / "services/payments/Dockerfile",
    "notifications": ROOT / "services/notifications/Dockerfile",
    "gateway": ROOT / "gateway/Dockerfile",
    "locust": ROOT / "loadtests/Dockerfile",
    "consul-dev": ROOT / "infra/docker/images/consul-dev/Dockerfile",
}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# -- the compose-spec schema ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    pytest.importorskip(
        "check_jsonschema", reason="check-jsonschema (ships the compose-spec schema) missing"
    )
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def schema_errors(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    )


@pytest.mark.parametrize("path", [COMPOSE_FILE, TEST_OVERRIDE], ids=lambda p: p.name)
def test_file_follows_the_compose_spec_schema(path: Path, compose_schema: dict[str, Any]) -> None:
    assert schema_errors(load(path), compose_schema) == []


def test_schema_check_catches_a_mistake(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["orders"]["restart_policy"] = "always"  # a swarm key at the wrong level
    broken["services"]["gateway"]["ports"] = "8080:8080"  # a string, not a list
    errors = schema_errors(broken, compose_schema)
    assert any("restart_policy" in e for e in errors), errors
    assert any(e.startswith("services/gateway/ports") for e in errors), errors


def test_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose specification has no `version` key"


# -- docker-compose config --------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in secret env files: `config` refuses a missing env_file."""
    directory = tmp_path_factory.mktemp("compose-env")
    for name, variables in {
        "gateway.env": ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_TOKEN"),
        "services.env": ("ADMIN_TOKEN",),
        "grafana.env": ("GF_SECURITY_ADMIN_PASSWORD",),
    }.items():
        (directory / name).write_text("".join(f"{v}=not-a-secret-0123456789\n" for v in variables))
    return directory


@pytest.mark.parametrize(
    "files",
    [(COMPOSE_FILE,), (COMPOSE_FILE, TEST_OVERRIDE)],
    ids=["docker-compose.yml", "with-test-override"],
)
def test_docker_compose_config_accepts_the_files(files: tuple[Path, ...], env_dir: Path) -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("docker-compose is not installed here: only the schema check ran")
    project = ComposeProject("meshconfig", files, {"MESH_COMPOSE_ENV_DIR": str(env_dir)}, cli)
    project.compose("config", "-q", timeout=60)
    project.compose("--profile", "load", "config", "-q", timeout=60)


def test_profiles_keep_load_and_observability_optional(
    services: dict[str, dict[str, Any]],
) -> None:
    # docker-compose 1.29 lists every service in `config --services`, profiles or not: read
    # the files instead.
    assert services["locust-master"]["profiles"] == ["load"]
    assert services["locust-worker"]["profiles"] == ["load"]
    unprofiled = {name for name, service in services.items() if "profiles" not in service}
    assert set(APP_SERVICES) | set(INFRA_SERVICES) | set(OBSERVABILITY) <= unprofiled


# -- conventions of docker-compose.yml --------------------------------------------------------


def test_every_container_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in NO_HEALTHCHECK:
            assert check.get("disable") is True, f"{name}: say `disable: true` explicitly"
        elif not check.get("test"):
            missing.append(name)
    assert missing == []


def test_restart_policies_limits_and_log_rotation(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "no"), name
        assert service.get("mem_limit"), f"{name}: no memory limit"
        assert float(service.get("cpus", 0)) > 0, f"{name}: no CPU limit"
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert logging.get("options", {}).get("max-size"), f"{name}: logs not rotated"
        assert "ALL" in service.get("cap_drop", []), f"{name}: capabilities not dropped"
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def test_read_only_root_filesystems(services: dict[str, dict[str, Any]]) -> None:
    # The Kafka image renders its configuration into its own filesystem at every start.
    writable = {name for name, s in services.items() if not s.get("read_only")}
    assert writable == {"kafka"}


def test_published_ports_bind_to_loopback_by_default(services: dict[str, dict[str, Any]]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            text = interpolate(str(port))
            assert text.startswith("127.0.0.1:"), f"{name}: {port} binds beyond loopback"
            published[name] = text
    assert published["gateway"] == "127.0.0.1:8080:8080"
    assert {
        "gateway",
        "consul",
        "jaeger",
        "prometheus",
        "grafana",
        "locust-master",
        "otel-collector",
    } == set(published)


def test_what_has_no_healthcheck_names_a_health_endpoint(
    services: dict[str, dict[str, Any]],
) -> None:
    """meshctl up asks it from the host: the label's port must be published on loopback."""
    for name in NO_HEALTHCHECK - {"kafka-init"}:
        label = services[name]["labels"]["mesh.demo/health"]
        port = label.split("/", 1)[0]
        published = [interpolate(str(p)) for p in services[name]["ports"]]
        assert any(p.startswith("127.0.0.1:") and p.endswith(f":{port}") for p in published), name


def test_jaeger_keeps_what_its_memory_limit_holds(services: dict[str, dict[str, Any]]) -> None:
    jaeger = services["jaeger"]
    assert "./infra/jaeger/config.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"]
    assert jaeger["command"] == ["--config", "/etc/jaeger/config.yaml"]
    config = load(ROOT / "infra" / "jaeger" / "config.yaml")
    backends = config["extensions"]["jaeger_storage"]["backends"]
    (memory,) = [b["memory"] for b in backends.values()]
    limit = int(str(jaeger["mem_limit"]).rstrip("m")) * 2**20
    # About 60 KB per order trace (30 spans) in Jaeger's memory: at most half of the limit.
    assert memory["max_traces"] * 60_000 <= limit / 2, memory
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"].endswith(":13133")
    assert jaeger["environment"]["GOMEMLIMIT"].endswith("MiB")


def test_grafana_links_jaeger_relative_to_grafana() -> None:
    """Grafana runs on GRAFANA_PORT and MESH_BIND_ADDRESS, Jaeger on JAEGER_UI_PORT: a fixed
    http://127.0.0.1:16686 is wrong as soon as either is changed."""
    dashboard = json.loads((ROOT / "infra/grafana/dashboards/mesh-overview.json").read_text())
    (link,) = [x for x in dashboard["links"] if "Jaeger" in x["title"]]
    assert link["url"].startswith("/explore?"), link["url"]
    assert "16686" not in json.dumps(dashboard)
    datasources = load(ROOT / "infra/grafana/provisioning/datasources/datasources.yaml")
    uids = {d["uid"] for d in datasources["datasources"]}
    assert "jaeger" in uids and "%22uid%22%3A%22jaeger%22" in link["url"]


def test_no_host_shell_script_on_the_compose_path() -> None:
    """What `make up RUNTIME=compose` runs is Python (meshctl); the two scripts left are the
    build's: build-images.sh only hands over to Python, build-base.sh is debootstrap (Linux)."""
    scripts = sorted(p.name for p in (ROOT / "infra" / "docker").glob("*.sh"))
    assert scripts == ["build-base.sh", "build-images.sh"]
    wrapper = (ROOT / "infra" / "docker" / "build-images.sh").read_text()
    for bashism in ("timeout ", "mapfile", "declare -A", "[["):
        assert bashism not in wrapper, bashism
    makefile = (ROOT / "Makefile").read_text()
    assert "compose-up.sh" not in makefile and "test-compose.sh" not in makefile


def _k8s_images() -> dict[str, str]:
    """repository -> tag of every image pinned under k8s/base."""
    images: dict[str, str] = {}
    for path in (ROOT / "k8s" / "base").rglob("*.yaml"):
        for match in re.finditer(r"image:\s*([\w./-]+):([\w.-]+)", path.read_text()):
            images[match.group(1)] = match.group(2)
    return images


def test_images_are_pinned_like_k8s(services: dict[str, dict[str, Any]]) -> None:
    k8s = _k8s_images()
    for name, service in services.items():
        image = interpolate(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
        if not repository.startswith("mesh-demo/") and repository in k8s:
            assert tag == k8s[repository], f"{name}: {image} but k8s/base pins {k8s[repository]}"
    assert interpolate(services["kafka"]["image"]) == "apache/kafka:3.9.1"
    assert interpolate(services["consul"]["image"]).startswith("hashicorp/consul:1.20.")


def test_services_wait_for_topics_redis_and_consul(services: dict[str, dict[str, Any]]) -> None:
    for name in ("orders", "inventory", "payments", "notifications"):
        deps = services[name]["depends_on"]
        assert deps["kafka-init"] == {"condition": "service_completed_successfully"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
        assert deps["consul"] == {"condition": "service_healthy"}, name
    assert services["kafka-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(duration))
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]


def test_stop_grace_period_covers_the_shutdown_grace(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        service = services[name]
        grace = float(service["environment"]["SHUTDOWN_GRACE_SECONDS"])
        assert _seconds(service["stop_grace_period"]) >= grace + 5, name


def test_app_containers_advertise_their_own_address(services: dict[str, dict[str, Any]]) -> None:
    # A fixed ADVERTISE_ADDRESS would give every replica of `--scale` the same Consul address.
    for name in APP_SERVICES:
        assert "ADVERTISE_ADDRESS" not in services[name]["environment"], name
        assert "container_name" not in services[name], f"{name}: container_name blocks --scale"
        env = services[name]["environment"]
        assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8080", name


def test_secrets_come_from_generated_env_files(services: dict[str, dict[str, Any]]) -> None:
    text = COMPOSE_FILE.read_text()
    for secret in ("GATEWAY_API_KEYS=", "GATEWAY_ADMIN_TOKEN=", "ADMIN_TOKEN=", "PASSWORD="):
        assert secret not in text, f"{secret} written into docker-compose.yml"
    assert any("gateway.env" in f for f in services["gateway"]["env_file"])


def test_override_swaps_infra_for_local_images() -> None:
    override = load(TEST_OVERRIDE)["services"]
    for name in INFRA_SERVICES:
        assert interpolate(override[name]["image"]).startswith("mesh-demo/"), name
    for name in OBSERVABILITY:
        assert override[name]["profiles"] == ["observability"], name


# -- the Dockerfiles ------------------------------------------------------------------------


def builder_stage(path: Path) -> str:
    text = path.read_text()
    start = text.index("FROM ${BASE_IMAGE} AS builder")
    end = text.index("# ---- the image:")
    # Only the extras to install may differ (the Locust image installs `load`).
    return re.sub(r"(?m)^ARG MESH_EXTRAS=.*$", "ARG MESH_EXTRAS=...", text[start:end])


def test_builder_stage_is_shared_by_every_dockerfile() -> None:
    # lesson-fat-image's orders too: its venv must be the slim image's, from the same cache.
    fat = ROOT / "infra/docker/images/orders-fat/Dockerfile"
    stages = {
        name: builder_stage(path) for name, path in {**PROJECT_DOCKERFILES, "fat": fat}.items()
    }
    reference = stages["orders"]
    assert [name for name, stage in stages.items() if stage != reference] == []


@pytest.mark.parametrize("name", sorted(PROJECT_DOCKERFILES))
def test_dockerfile_conventions(name: str) -> None:
    text = PROJECT_DOCKERFILES[name].read_text()
    final = text[text.index("# ---- the image:") :]
    assert text.startswith("#"), "explain the image in a header comment"
    assert "ARG BASE_IMAGE=python:3.12-slim" in text
    assert "USER 10001:10001" in final
    assert "HEALTHCHECK" in final and "curl" not in text
    cmd = re.search(r"(?ms)^CMD (\[.*?\])\s*$", final)
    assert cmd, "CMD must be in exec form"
    assert json.loads(cmd.group(1).replace("\\\n", ""))
    assert "pip wheel" in text and "COPY --from=builder /opt/venv /opt/venv" in final
    for tool in ("gcc", "build-essential", "apt-get"):
        assert tool not in final, f"{tool} in the final stage"


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "exclude everything, then allow what the images copy"
    for allowed in ("!pyproject.toml", "!services/", "!gateway/", "!infra/", "!loadtests/"):
        assert allowed in lines


# -- Redis persistence (issue 21) -------------------------------------------------------------
def test_redis_persistence_is_a_file_the_setting_names(services: dict[str, dict[str, Any]]) -> None:
    """MESH_REDIS_PERSISTENCE (the local runtime's setting) names the file of infra/redis/ the
    redis service starts with; the append-only file is on the named volume."""
    from infra.compose.project import REDIS_CONF_MOUNT
    from infra.embedded.persistence import REDIS_MODES

    redis = services["redis"]
    conf = f"./infra/redis/${{MESH_REDIS_PERSISTENCE:-everysec}}.conf:{REDIS_CONF_MOUNT}:ro"
    assert redis["volumes"] == ["redis-data:/data", conf]
    assert redis["command"][:2] == ["redis-server", REDIS_CONF_MOUNT]
    test_redis = load(ROOT / "docker-compose.test.yml")["services"]["redis"]
    assert test_redis["command"][:2] == ["redis-server", REDIS_CONF_MOUNT]
    for mode in REDIS_MODES:
        lines = (ROOT / "infra" / "redis" / f"{mode}.conf").read_text().splitlines()
        settings = [line for line in lines if line and not line.startswith("#")]
        assert 'save ""' in settings, mode  # no RDB snapshot: `down` keeps nothing when off
        if mode == "off":
            assert "appendonly no" in settings
        else:
            assert settings[-2:] == ["appendonly yes", f"appendfsync {mode}"]


def test_redis_keeps_is_read_from_the_container() -> None:
    from infra.compose.persistence import redis_keeps
    from infra.compose.project import REDIS_CONF_MOUNT, Container

    def container(conf: str, data: dict[str, str]) -> Container:
        mounts = [
            {
                "Type": "bind",
                "Source": f"/repo/infra/redis/{conf}",
                "Destination": REDIS_CONF_MOUNT,
            },
            {**data, "Destination": "/data"},
        ]
        return Container.from_inspect({"Id": "x", "Name": "/p-redis-1", "Mounts": mounts})

    named = {"Type": "volume", "Name": "meshpersist_redis-data"}
    anonymous = {"Type": "volume", "Name": "a" * 64}
    assert redis_keeps(container("everysec.conf", named)) == {
        "persistence": "everysec",
        "data": "volume meshpersist_redis-data",
    }
    assert redis_keeps(container("always.conf", anonymous))["data"] == "an anonymous volume"
    assert redis_keeps(container("off.conf", named)) == {"persistence": "off"}


def test_the_recorded_persistence_wins_over_the_shell(tmp_path: Path) -> None:
    """What Redis runs with is in state.env (meshctl up, or a switch since): every later
    compose call renders the redis service with it, whatever the shell says."""
    from infra.compose.project import ComposeProject

    home = tmp_path / "mesh"
    (home / "compose").mkdir(parents=True)
    (home / "compose" / "state.env").write_text(
        "COMPOSE_PROJECT=p1\nCOMPOSE_INFRA=local\nMESH_REDIS_PERSISTENCE=everysec\n"
    )
    shell = {"MESH_REDIS_PERSISTENCE": "off"}
    project = ComposeProject.from_state(home, shell)
    assert project.environ["MESH_REDIS_PERSISTENCE"] == "everysec"
    project.record("MESH_REDIS_PERSISTENCE", "always")
    again = ComposeProject.from_state(home, shell)
    assert again.environ["MESH_REDIS_PERSISTENCE"] == "always"
    assert (again.name, again.base_files[-1].name) == ("p1", "docker-compose.test.yml")
    # An infrastructure override in the project's folder is read by every call while there.
    assert (project.state_dir / "infra-override.yml") not in project.files()
    project.state_dir.mkdir(parents=True)
    (project.state_dir / "infra-override.yml").write_text("services: {}\n")
    assert project.files()[2] == project.state_dir / "infra-override.yml"
