"""The manifests agree with the rest of the project: the topic list and consumer groups of
infra/kafka/topics.py, the addresses the configuration names, the image tags, and the v1 spec
that every versioned Deployment copies."""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_builds import COMPONENTS, K8S, Build, get_build
from k8s_checks import (
    APPS,
    NAME_LABEL,
    Obj,
    addresses_in,
    check_addresses,
    check_metric_sources,
    check_weights_before_traffic,
    container_env,
    containers,
    find,
    of_kind,
    pod_template,
    resolve_address,
    workloads,
)

from infra.kafka.topics import all_topics, consumed_by

INFRA_IMAGES = {
    "apache/kafka:3.9.1",
    "hashicorp/consul:1.20.6",
    "redis:7.4.6",
    "otel/opentelemetry-collector-contrib:0.150.1",
    "jaegertracing/jaeger:2.21.0",
    "prom/prometheus:v3.5.0",
    "grafana/grafana:12.0.2",
}


@pytest.fixture(scope="module")
def full(builds: dict[str, Any]) -> list[Obj]:
    return get_build(builds, "dev[all]").objects


def _config_map(objs: list[Obj], prefix: str) -> Obj:
    """A ConfigMap by its name before kustomize's hash suffix."""
    found = [
        o
        for o in of_kind(objs, "ConfigMap")
        if re.fullmatch(rf"{prefix}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"ConfigMap {prefix}: {len(found)} found"
    return found[0]


def test_topic_job_creates_exactly_the_declared_topics(full: list[Obj]) -> None:
    text = _config_map(full, "kafka-topics")["data"]["topics.txt"]
    declared = {
        name: int(partitions)
        for name, partitions in (line.split() for line in text.splitlines() if line.strip())
    }
    assert declared == all_topics()


def test_scaled_objects_follow_the_consumer_groups(full: list[Obj]) -> None:
    kafka_service = find(full, "Service", "kafka")
    assert kafka_service is not None
    for so in of_kind(full, "ScaledObject"):
        service = so["metadata"]["name"]
        triggers = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        assert sorted(t["metadata"]["topic"] for t in triggers) == sorted(consumed_by(service))
        for t in triggers:
            assert t["metadata"]["consumerGroup"] == service
            host, port = t["metadata"]["bootstrapServers"].rsplit(":", 1)
            assert (
                host == "kafka.mesh.svc" and int(port) == kafka_service["spec"]["ports"][0]["port"]
            )
        assert so["spec"]["scaleTargetRef"]["name"] == service
    consumers = {name for name in APPS if consumed_by(name)}
    assert {so["metadata"]["name"] for so in of_kind(full, "ScaledObject")} == consumers


def config_file_addresses(objs: list[Obj]) -> list[str]:
    """host:port of the infrastructure's config files: the collector's exporters,
    Prometheus' targets and Consul servers, Grafana's datasources."""
    addresses: list[str] = []
    otel = yaml.safe_load(_config_map(objs, "otel-collector-config")["data"]["config.yaml"])
    addresses += [e["endpoint"] for e in otel["exporters"].values()]
    prometheus = yaml.safe_load(_config_map(objs, "prometheus-config")["data"]["prometheus.yml"])
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            addresses += static["targets"]
        addresses += [sd["server"] for sd in job.get("consul_sd_configs", [])]
    datasources = yaml.safe_load(
        _config_map(objs, "grafana-datasources")["data"]["datasources.yaml"]
    )
    addresses += [d["url"] for d in datasources["datasources"]]
    return addresses


def test_every_address_in_env_is_a_service_port_of_the_same_build(build: Build) -> None:
    """Every overlay x component combination: a URL that works in dev may not in prod
    (the gateway Service listens on 80 there)."""
    errors = check_addresses(build.objects)
    for value in config_file_addresses(build.objects):
        for host, port in addresses_in(value):
            if why := resolve_address(build.objects, host, port):
                errors.append(f"config {value}: {why}")
    assert not errors, "\n".join(errors)
    mesh = _config_map(build.objects, "mesh-config")["data"]
    assert mesh["PORT"] == "8080" and mesh["HOST"] == "0.0.0.0"


@pytest.mark.parametrize("spec_id", ["dev[loadtest]", "prod[loadtest]", "prod[all](wrapper)"])
def test_locust_targets_the_gateway_services_own_port(builds: dict[str, Any], spec_id: str) -> None:
    objs = get_build(builds, spec_id).objects
    gateway = find(objs, "Service", "gateway")
    assert gateway is not None
    port = gateway["spec"]["ports"][0]["port"]
    host = _config_map(objs, "locust-config")["data"]["LOCUST_HOST"]
    assert host == f"http://gateway:{port}"
    assert port == (80 if spec_id.startswith("prod") else 8080)


def test_the_address_check_catches_a_port_or_a_service_that_is_not_there(
    builds: dict[str, Any],
) -> None:
    objs = copy.deepcopy(get_build(builds, "prod[loadtest]").objects)
    assert check_addresses(objs) == []
    _config_map(objs, "locust-config")["data"]["LOCUST_HOST"] = "http://gateway:8080"
    _config_map(objs, "mesh-config")["data"]["REDIS_URL"] = "redis://redis-master:6379/0"
    kafka = _config_map(objs, "kafka-env")["data"]
    kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] += ",3@kafka-3.kafka-headless.mesh.svc:9093"
    errors = "\n".join(check_addresses(objs))
    assert "LOCUST_HOST=http://gateway:8080: Service gateway has no port 8080" in errors
    assert "no Service redis-master" in errors
    assert "no pod kafka-3 behind kafka-headless" in errors
    assert addresses_in("PLAINTEXT://:9092,CONTROLLER://:9093") == [("", 9092), ("", 9093)]


def test_every_versioned_deployment_puts_its_weights_in_consul_first(build: Build) -> None:
    errors = check_weights_before_traffic(build.objects)
    assert not errors, "\n".join(errors)


def test_the_weights_check_catches_a_version_with_no_weights(builds: dict[str, Any]) -> None:
    objs = copy.deepcopy(get_build(builds, "dev[all]").objects)
    assert check_weights_before_traffic(objs) == []
    payments_v2 = find(objs, "Deployment", "payments-v2")
    orders_v2 = find(objs, "Deployment", "orders-v2")
    assert payments_v2 is not None and orders_v2 is not None
    del payments_v2["spec"]["template"]["spec"]["initContainers"]
    _config_map(objs, "traffic-orders")["data"]["weights.json"] = '{"v1": 100, "v3": 0}'
    errors = "\n".join(check_weights_before_traffic(objs))
    assert "Deployment/payments-v2 (payments v2): nothing puts mesh/traffic/payments" in errors
    assert "do not name v1 and v2" in errors


def test_every_autoscaler_metric_has_a_source(build: Build) -> None:
    errors = check_metric_sources(build.objects)
    assert not errors, "\n".join(errors)


def test_the_metric_source_check_catches_unserved_metrics(builds: dict[str, Any]) -> None:
    objs = copy.deepcopy(get_build(builds, "dev[all]").objects)
    assert check_metric_sources(objs) == []
    gateway = find(objs, "Deployment", "gateway")
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")
    so = find(objs, "ScaledObject", "payments")
    assert gateway and hpa and so
    del gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    hpa["spec"]["metrics"].append({"type": "Pods", "pods": {}})
    so["spec"]["triggers"][0]["metadata"]["topic"] = "payments.requested"
    errors = "\n".join(check_metric_sources(objs))
    assert "cpu utilization of Deployment/gateway, whose container app requests no cpu" in errors
    assert "no metrics adapter here serves Pods metrics" in errors
    assert "topic payments.requested is created by no Job here" in errors


def test_prometheus_discovers_every_application_through_consul(full: list[Obj]) -> None:
    prometheus = yaml.safe_load(_config_map(full, "prometheus-config")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    services = jobs["mesh-services"]["consul_sd_configs"][0]["services"]
    assert sorted(services) == sorted(APPS)
    targets = {r.get("target_label") for r in jobs["mesh-services"]["relabel_configs"]}
    assert {"service", "version"} <= targets


def test_grafana_dashboard_uses_the_provisioned_datasource(full: list[Obj]) -> None:
    uid = yaml.safe_load(_config_map(full, "grafana-datasources")["data"]["datasources.yaml"])[
        "datasources"
    ][0]["uid"]
    dashboards = _config_map(full, "grafana-dashboards")["data"]
    for text in dashboards.values():
        dashboard = json.loads(text)
        assert dashboard["panels"], "an empty dashboard"
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == uid
            assert all(t["expr"] for t in panel["targets"])
    providers = yaml.safe_load(
        _config_map(full, "grafana-dashboard-providers")["data"]["dashboards.yaml"]
    )
    path = providers["providers"][0]["options"]["path"]
    grafana = find(full, "Deployment", "grafana")
    assert grafana is not None
    mounts = {
        m["mountPath"]: m["name"]
        for m in grafana["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts.get(path) == "dashboards"


def test_images_are_the_project_tags_and_the_chosen_infra_pins(full: list[Obj]) -> None:
    images = {
        c["image"]
        for w in full
        if w["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    own = {i for i in images if i.startswith("mesh-demo/")}
    assert own == {f"mesh-demo/{name}:0.1.0" for name in (*APPS, "locust")}
    assert images - own == INFRA_IMAGES


def _normalized_pod(dep: Obj) -> Obj:
    """The pod template without what differs by version (labels, SERVICE_VERSION, affinity)."""
    template: Obj = copy.deepcopy(dep["spec"]["template"])
    template["metadata"]["labels"].pop("mesh.demo/version")
    template["spec"].pop("affinity", None)
    # What a versioned Deployment adds: the init container that seeds its weights.
    template["spec"].pop("initContainers", None)
    template["spec"]["volumes"] = [v for v in template["spec"]["volumes"] if v["name"] != "traffic"]
    for c in template["spec"]["containers"]:
        c["env"] = [e for e in c["env"] if e["name"] != "SERVICE_VERSION"]
    return template


@pytest.mark.parametrize("spec_id", ["dev[all]", "prod[all]"])
def test_versioned_deployments_copy_v1_but_the_version(
    builds: dict[str, Any], spec_id: str
) -> None:
    objs: list[Obj] = get_build(builds, spec_id).objects
    versioned = [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-v2")]
    assert {d["metadata"]["name"] for d in versioned} == {"orders-v2", "payments-v2"}
    for v2 in versioned:
        name = v2["metadata"]["labels"][NAME_LABEL]
        v1 = find(objs, "Deployment", name)
        assert v1 is not None
        assert _normalized_pod(v2) == _normalized_pod(v1), (
            f"{v2['metadata']['name']} drifted from {name}"
        )
        env = {
            e["name"]: e.get("value")
            for e in v2["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["SERVICE_VERSION"] == "v2"
        assert v2["spec"]["selector"]["matchLabels"]["mesh.demo/version"] == "v2"


def test_traffic_weights_are_valid_and_sum_to_100(full: list[Obj]) -> None:
    maps = [
        cm for cm in of_kind(full, "ConfigMap") if cm["metadata"]["name"].startswith("traffic-")
    ]
    assert {cm["metadata"]["name"] for cm in maps} == {"traffic-orders", "traffic-payments"}
    for cm in maps:
        service = cm["metadata"]["name"].removeprefix("traffic-")
        assert cm["metadata"]["annotations"]["mesh.demo/consul-key"] == f"mesh/traffic/{service}"
        weights = json.loads(cm["data"]["weights.json"])
        assert set(weights) == {"v1", "v2"} and sum(weights.values()) == 100


def test_readme_documents_every_component_and_overlay() -> None:
    readme = (K8S / "README.md").read_text()
    for name in (*COMPONENTS, "overlays/dev", "overlays/prod"):
        assert name in readme, name
    # What a first `make k8s-up` needs beyond a cluster, and the step-by-step for kind.
    for needed in ("### On kind, step by step", "metrics-server", "minikube", "k3d", "REGISTRY"):
        assert needed in readme, needed
    on_disk = {p.name for p in (K8S / "components").iterdir() if p.is_dir()}
    assert on_disk == set(COMPONENTS)


def test_every_object_carries_the_part_of_label(build: Build) -> None:
    unlabeled = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in build.objects
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "mesh-demo"
    ]
    assert not unlabeled, unlabeled


# ------------------------------------------------------------------------------------------
# Every setting a project container is given is read by the program it runs.

ROOT = K8S.parent
# What the programs of the project images read besides their settings classes: the OTel SDK
# reads the resource variables itself (opentelemetry.sdk.resources, checked below).
SDK_MODULE = "opentelemetry.sdk.resources"


def _string_constants(*paths: Path) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)
    return names


def _settings_names(module: str) -> set[str]:
    from pydantic import AliasChoices

    from services.common.settings import ServiceSettings

    mod = importlib.import_module(module)
    cls = next(
        v
        for v in vars(mod).values()
        if isinstance(v, type) and issubclass(v, ServiceSettings) and v.__module__ == module
    )
    names = set(cls.model_fields)
    for info in cls.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names |= {str(c) for c in info.validation_alias.choices}
        elif isinstance(info.validation_alias, str):
            names.add(info.validation_alias)
    return names


def _sdk_names() -> set[str]:
    source = inspect.getsource(importlib.import_module(SDK_MODULE))
    return {n for n in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES") if n in source}


@functools.cache
def _locust_names() -> set[str]:
    # Locust's own parser knows its LOCUST_* variables; importing locust here would
    # monkey-patch this test process with gevent, so ask a child process.
    script = (
        "from locust.argument_parser import get_parser\n"
        "print(' '.join(a.env_var for a in get_parser()._actions if getattr(a, 'env_var', None)))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    options = set(answer.stdout.split())
    assert "LOCUST_HOST" in options, answer.stderr
    loadtests = ROOT / "loadtests"
    return options | _string_constants(*(loadtests / f for f in ("locustfile.py", "shop.py")))


def names_read(image: str, argv: list[str]) -> set[str] | None:
    """The environment variables the program of a project container reads, or None for an
    image that is not the project's (the infrastructure's images document their own)."""
    name = image.split("/", 1)[1].split(":")[0] if image.startswith("mesh-demo/") else None
    if name is None:
        return None
    if argv[:3] == ["python", "-m", "infra.k8s.seed_weights"]:
        return _string_constants(ROOT / "infra" / "k8s" / "seed_weights.py")
    if name == "locust":
        return _locust_names()
    module = "gateway.settings" if name == "gateway" else f"services.{name}.settings"
    return _settings_names(module) | _sdk_names()


def unread_env(objs: list[Obj]) -> list[str]:
    errors = []
    for obj in workloads(objs):
        template = pod_template(obj)
        assert template is not None
        for _, c in containers(template["spec"]):
            argv = [*(c.get("command") or []), *(c.get("args") or [])]
            read = names_read(c["image"], argv)
            if read is None:
                continue
            given = [e["name"] for e in c.get("env") or []]
            for env_from in c.get("envFrom") or []:
                ref = env_from.get("configMapRef") or {}
                cm = find(objs, "ConfigMap", ref.get("name", ""))
                given += list((cm or {}).get("data") or {})
            # A variable only there to be spelled $(NAME) in another one is read by the kubelet.
            spelled = {
                v
                for e in c.get("env") or []
                for v in re.findall(r"\$\((\w+)\)", e.get("value", ""))
            }
            for key in given:
                if key not in read and key not in spelled:
                    errors.append(f"{obj['kind']}/{obj['metadata']['name']} {c['name']}: {key}")
    return errors


def test_every_setting_given_to_a_project_container_is_read(build: Build) -> None:
    errors = unread_env(build.objects)
    assert not errors, "settings nothing reads:\n" + "\n".join(sorted(set(errors)))


def test_the_unread_setting_check_catches_a_stray_key(builds: dict[str, Any]) -> None:
    objs = copy.deepcopy(get_build(builds, "dev[all]").objects)
    assert unread_env(objs) == []
    _config_map(objs, "mesh-config")["data"]["MESH_RUNTIME"] = "k8s"
    _config_map(objs, "locust-config")["data"]["LOCUST_HOSTNAME"] = "gateway"
    errors = "\n".join(unread_env(objs))
    assert "Deployment/orders app: MESH_RUNTIME" in errors
    assert "Deployment/locust-master locust: LOCUST_HOSTNAME" in errors
    assert {"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"} == _sdk_names()


def kit_label_names() -> set[str]:
    """The label names of the series a service exposes (the kit's metrics, for real)."""
    from services.common.metrics import Metrics

    metrics = Metrics("orders", "v1")
    metrics.http_requests.labels(*(["x"] * len(metrics.http_requests._labelnames))).inc()
    return {
        label for family in metrics.registry.collect() for s in family.samples for label in s.labels
    }


def label_clashes(prometheus: dict[str, Any], scraped: set[str]) -> list[str]:
    """Jobs that set a target label the scraped series carry already, without honor_labels:
    Prometheus then renames the series' own label to exported_<name>."""
    errors = []
    for job in prometheus["scrape_configs"]:
        set_here = {r.get("target_label") for r in job.get("relabel_configs") or []}
        clash = sorted((set_here & scraped) - {None})
        if clash and not job.get("honor_labels", False):
            errors.append(f"job {job['job_name']}: {clash} would become exported_*")
    return errors


@pytest.mark.parametrize("spec_id", ["dev[plain]", "prod[plain]"])
def test_prometheus_keeps_the_services_own_labels(builds: dict[str, Any], spec_id: str) -> None:
    objs = get_build(builds, spec_id).objects
    config = yaml.safe_load(_config_map(objs, "prometheus-config")["data"]["prometheus.yml"])
    scraped = kit_label_names()
    assert {"service", "version"} <= scraped
    assert label_clashes(config, scraped) == []
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "mesh-services")
    del job["honor_labels"]
    assert label_clashes(config, scraped) == [
        "job mesh-services: ['service', 'version'] would become exported_*"
    ]


def consul_check_too_hasty(objs: list[Obj]) -> list[str]:
    """An application's Consul check of /readyz must not give up sooner than the kubelet's
    readiness probe of the same /readyz: else a pod Kubernetes finds ready drops out of Consul,
    which the gateway routes by."""
    from services.common.settings import ServiceSettings
    from services.common.units import _parse_duration

    default = ServiceSettings.model_fields["CHECK_TIMEOUT"].default
    errors = []
    for dep in of_kind(objs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            probe = c.get("readinessProbe") or {}
            if (probe.get("httpGet") or {}).get("path") != "/readyz":
                continue
            env = container_env(objs, c)
            consul = float(_parse_duration(env.get("CHECK_TIMEOUT", default)))
            kubelet = float(probe.get("timeoutSeconds", 1))
            if consul < kubelet:
                errors.append(
                    f"Deployment/{dep['metadata']['name']}: Consul's check times out after "
                    f"{consul:g}s, the readiness probe after {kubelet:g}s"
                )
    return errors


def test_consul_waits_for_readyz_as_long_as_the_kubelet(build: Build) -> None:
    errors = consul_check_too_hasty(build.objects)
    assert not errors, "\n".join(errors)
