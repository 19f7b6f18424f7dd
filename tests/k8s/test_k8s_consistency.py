"""The manifests agree with the rest of the project: the topic list and consumer groups of
infra/kafka/topics.py, the addresses the configuration names, the image tags, and the v1 spec
that every versioned Deployment copies."""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from k8s_builds import COMPONENTS, K8S, Build, get_build
from k8s_checks import APPS, NAME_LABEL, Obj, find, of_kind

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


def _service_port(objs: list[Obj], host: str, port: int) -> bool:
    name = host.split(".")[0]
    svc = find(objs, "Service", name)
    return svc is not None and any(p["port"] == port for p in svc["spec"]["ports"])


def test_configured_addresses_name_real_services(full: list[Obj]) -> None:
    mesh = _config_map(full, "mesh-config")["data"]
    addresses = [mesh["KAFKA_BOOTSTRAP_SERVERS"]]
    for key in ("REDIS_URL", "CONSUL_HTTP_ADDR", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        parts = urlsplit(mesh[key])
        addresses.append(f"{parts.hostname}:{parts.port}")
    locust = _config_map(full, "locust-config")["data"]
    addresses.append(urlsplit(locust["LOCUST_HOST"]).netloc)
    addresses.append(f"{locust['LOCUST_MASTER_NODE_HOST']}:{locust['LOCUST_MASTER_NODE_PORT']}")
    otel = yaml.safe_load(_config_map(full, "otel-collector-config")["data"]["config.yaml"])
    addresses += [e["endpoint"] for e in otel["exporters"].values()]
    prometheus = yaml.safe_load(_config_map(full, "prometheus-config")["data"]["prometheus.yml"])
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            addresses += [t for t in static["targets"] if not t.startswith("localhost")]
        addresses += [sd["server"] for sd in job.get("consul_sd_configs", [])]
    datasources = yaml.safe_load(
        _config_map(full, "grafana-datasources")["data"]["datasources.yaml"]
    )
    addresses += [urlsplit(d["url"]).netloc for d in datasources["datasources"]]
    wrong = [
        a
        for a in addresses
        if not _service_port(full, a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))
    ]
    assert not wrong, f"addresses with no Service port behind them: {wrong}"
    assert mesh["PORT"] == "8080" and mesh["HOST"] == "0.0.0.0"


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
    on_disk = {p.name for p in (K8S / "components").iterdir() if p.is_dir()}
    assert on_disk == set(COMPONENTS)


def test_every_object_carries_the_part_of_label(build: Build) -> None:
    unlabeled = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in build.objects
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "mesh-demo"
    ]
    assert not unlabeled, unlabeled
