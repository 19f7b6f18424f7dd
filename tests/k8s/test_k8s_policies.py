"""Policy checks on every build, and proof that each check catches what it is for."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from k8s_builds import BUILD_SPECS, Build, get_build
from k8s_checks import (
    Obj,
    check_autoscaling,
    check_containers,
    check_disruption_budgets,
    check_graceful_shutdown,
    check_pod_security_restricted,
    check_prod_spread,
    check_quorums,
    check_references,
    check_selectors,
    check_services,
    find,
    image_is_pinned,
    of_kind,
)


def _report(errors: list[str]) -> str:
    return "\n".join(errors)


def test_containers_are_probed_bounded_unprivileged_and_pinned(build: Build) -> None:
    errors = check_containers(build.objects) + check_pod_security_restricted(build.objects)
    assert not errors, _report(errors)


def test_selectors_match_their_pods_and_do_not_overlap(build: Build) -> None:
    errors = check_selectors(build.objects)
    assert not errors, _report(errors)


def test_services_select_workloads_and_target_real_ports(build: Build) -> None:
    errors = check_services(build.objects)
    assert not errors, _report(errors)


def test_every_reference_resolves_in_the_build(build: Build) -> None:
    errors = check_references(build.objects)
    assert not errors, _report(errors)


def test_applications_autoscale_with_fast_up_and_stabilized_down(build: Build) -> None:
    errors = check_autoscaling(build.objects)
    assert not errors, _report(errors)


def test_disruption_budgets(build: Build) -> None:
    errors = check_disruption_budgets(build.objects, prod=build.spec.prod)
    assert not errors, _report(errors)


@pytest.mark.parametrize("spec_id", [s.id for s in BUILD_SPECS if s.prod])
def test_prod_runs_replicated_and_spread(builds: dict[str, Any], spec_id: str) -> None:
    errors = check_prod_spread(get_build(builds, spec_id).objects)
    assert not errors, _report(errors)


def test_applications_shut_down_gracefully(build: Build) -> None:
    errors = check_graceful_shutdown(build.objects)
    assert not errors, _report(errors)


def test_quorums_fit_their_replica_counts(build: Build) -> None:
    errors = check_quorums(build.objects)
    assert not errors, _report(errors)
    size = 3 if build.spec.prod else 1
    for name in ("kafka", "consul"):
        sts = find(build.objects, "StatefulSet", name)
        assert sts is not None and sts["spec"]["replicas"] == size


def test_dev_is_small(builds: dict[str, Any]) -> None:
    build = get_build(builds, "dev[plain]")
    for hpa in of_kind(build.objects, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] == 1, hpa["metadata"]["name"]
    for dep in of_kind(build.objects, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"] in ("25m", "50m", "100m"), dep["metadata"][
                "name"
            ]


def test_prod_gateway_is_a_load_balancer(builds: dict[str, Any]) -> None:
    gateway = find(get_build(builds, "prod[plain]").objects, "Service", "gateway")
    assert gateway is not None and gateway["spec"]["type"] == "LoadBalancer"
    dev_gateway = find(get_build(builds, "dev[plain]").objects, "Service", "gateway")
    assert dev_gateway is not None and dev_gateway["spec"]["type"] == "ClusterIP"


# ------------------------------------------------------------------------------------------
# Each check fails on a manifest that breaks its rule.


@pytest.fixture
def objs(builds: dict[str, Any]) -> list[Obj]:
    """A private copy of the prod build with every component, to break at will."""
    return copy.deepcopy(get_build(builds, "prod[all]").objects)


def _deployment(objs: list[Obj], name: str) -> Obj:
    found = find(objs, "Deployment", name)
    assert found is not None
    return found


def _app_container(objs: list[Obj], name: str = "orders") -> Obj:
    container: Obj = _deployment(objs, name)["spec"]["template"]["spec"]["containers"][0]
    return container


def test_container_check_catches_each_breach(objs: list[Obj]) -> None:
    assert check_containers(objs) == []
    c = _app_container(objs)
    c["image"] = "mesh-demo/orders:latest"
    del c["readinessProbe"]
    del c["resources"]["limits"]["memory"]
    c["securityContext"]["allowPrivilegeEscalation"] = True
    c["securityContext"]["capabilities"] = {"drop": ["NET_RAW"], "add": ["SYS_ADMIN"]}
    c["securityContext"]["readOnlyRootFilesystem"] = False
    c["livenessProbe"]["httpGet"]["path"] = "/readyz"
    spec = _deployment(objs, "orders")["spec"]["template"]["spec"]
    spec["securityContext"]["runAsNonRoot"] = False
    del c["securityContext"]["runAsNonRoot"]
    spec["securityContext"]["runAsUser"] = 0
    spec["automountServiceAccountToken"] = True
    redis = find(objs, "StatefulSet", "redis")
    assert redis is not None
    redis["spec"]["template"]["spec"]["containers"][0]["image"] = "redis"
    errors = "\n".join(check_containers(objs))
    for expected in (
        "not pinned",
        "no readinessProbe",
        "no limits.memory",
        "allowPrivilegeEscalation",
        "do not drop ALL",
        "SYS_ADMIN",
        "readOnlyRootFilesystem is not true",
        "livenessProbe is not GET /healthz",
        "runAsNonRoot",
        "uid 0",
        "automountServiceAccountToken",
        "StatefulSet/redis container redis: image 'redis'",
    ):
        assert expected in errors, f"{expected!r} not reported:\n{errors}"


def test_images_are_judged_pinned_only_with_a_version_or_digest() -> None:
    assert image_is_pinned("redis:7.4.6")
    assert image_is_pinned("registry.example.com:5000/team/app:1.2.3")
    assert image_is_pinned("redis@sha256:" + "a" * 64)
    for loose in ("redis", "redis:latest", "registry.example.com:5000/app", "app:stable"):
        assert not image_is_pinned(loose), loose


def test_probe_exemption_needs_the_annotation(objs: list[Obj]) -> None:
    worker = _deployment(objs, "locust-worker")
    del worker["spec"]["template"]["metadata"]["annotations"]["mesh.demo/probes-exempt"]
    assert any("locust-worker" in e and "no readinessProbe" in e for e in check_containers(objs))


def test_pod_security_check_catches_host_access(objs: list[Obj]) -> None:
    spec = _deployment(objs, "grafana")["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})
    spec["containers"][0]["ports"][0]["hostPort"] = 3000
    errors = check_pod_security_restricted(objs)
    assert any("hostPath" in e for e in errors) and any("hostPort" in e for e in errors), errors


def test_selector_check_catches_mismatch_and_overlap(objs: list[Obj]) -> None:
    assert check_selectors(objs) == []
    payments = _deployment(objs, "payments")
    payments["spec"]["template"]["metadata"]["labels"]["mesh.demo/version"] = "v3"
    orders_v2 = _deployment(objs, "orders-v2")
    orders_v2["spec"]["selector"]["matchLabels"].pop("mesh.demo/version")
    errors = check_selectors(objs)
    assert any("Deployment/payments: selector" in e for e in errors), errors
    assert any(
        "Deployment/orders-v2: selector also matches the pods of Deployment/orders" in e
        for e in errors
    )


def test_service_check_catches_bad_selector_and_target_port(objs: list[Obj]) -> None:
    assert check_services(objs) == []
    redis = find(objs, "Service", "redis")
    jaeger = find(objs, "Service", "jaeger")
    kafka = find(objs, "StatefulSet", "kafka")
    assert redis and jaeger and kafka
    redis["spec"]["selector"] = {"app.kubernetes.io/name": "rediss"}
    jaeger["spec"]["ports"][0]["targetPort"] = "otlp"
    kafka["spec"]["serviceName"] = "kafka"
    errors = "\n".join(check_services(objs))
    assert "Service/redis: selector" in errors
    assert "Service/jaeger: targetPort otlp/TCP" in errors
    assert "StatefulSet/kafka: serviceName" in errors


def test_reference_check_catches_missing_objects_keys_and_variables(objs: list[Obj]) -> None:
    assert check_references(objs) == []
    objs[:] = [
        o
        for o in objs
        if not (o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("grafana-dashboards"))
    ]
    c = _app_container(objs, "gateway")
    next(e for e in c["env"] if e["name"] == "GATEWAY_API_KEYS")["valueFrom"]["secretKeyRef"][
        "key"
    ] = "api-key"
    c["envFrom"].append({"configMapRef": {"name": "gateway-extra"}})
    c["env"].insert(0, {"name": "EARLY", "value": "$(POD_NAME)-x"})
    _deployment(objs, "orders")["spec"]["template"]["spec"]["serviceAccountName"] = "nobody"
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")
    assert hpa is not None
    hpa["spec"]["scaleTargetRef"]["name"] = "gateway-v9"
    errors = "\n".join(check_references(objs))
    for expected in (
        "ConfigMap grafana-dashboards",
        "Secret mesh-secrets has no key api-key",
        "ConfigMap gateway-extra does not exist",
        "uses $(POD_NAME) before it is set",
        "ServiceAccount nobody",
        "scale target gateway-v9",
    ):
        assert expected in errors, f"{expected!r} not reported:\n{errors}"


def test_autoscaling_check_catches_missing_and_sluggish_scalers(objs: list[Obj]) -> None:
    assert check_autoscaling(objs) == []
    objs[:] = [
        o
        for o in objs
        if not (o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "gateway")
    ]
    so = find(objs, "ScaledObject", "orders")
    assert so is not None
    so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ] = 0
    _deployment(objs, "inventory")["spec"]["replicas"] = 3
    del _deployment(objs, "orders-v2")["metadata"]["annotations"]["mesh.demo/fixed-replicas"]
    errors = "\n".join(check_autoscaling(objs))
    assert "Deployment/gateway: no HorizontalPodAutoscaler" in errors
    assert "ScaledObject/orders: scale-down is not stabilized" in errors
    assert "Deployment/inventory: sets spec.replicas" in errors
    assert "Deployment/orders-v2: no HorizontalPodAutoscaler" in errors


def test_disruption_budget_check_catches_missing_and_blocking_budgets(objs: list[Obj]) -> None:
    assert check_disruption_budgets(objs, prod=True) == []
    objs[:] = [
        o
        for o in objs
        if not (o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == "grafana")
    ]
    consul = find(objs, "PodDisruptionBudget", "consul")
    gateway = find(objs, "PodDisruptionBudget", "gateway")
    assert consul and gateway
    consul["spec"]["maxUnavailable"] = 0
    del gateway["spec"]["maxUnavailable"]
    gateway["spec"]["minAvailable"] = 2
    locust = find(objs, "PodDisruptionBudget", "locust")
    assert locust is not None
    del locust["spec"]["selector"]["matchExpressions"]
    errors = "\n".join(check_disruption_budgets(objs, prod=True))
    assert "Deployment/grafana: no PodDisruptionBudget" in errors
    assert "PodDisruptionBudget/consul: maxUnavailable 0" in errors
    assert "PodDisruptionBudget/gateway: minAvailable 2 with 2 replicas" in errors
    assert "PodDisruptionBudget/locust: selects the pods of Job/locust-drill" in errors
    assert "no PodDisruptionBudget" not in "\n".join(check_disruption_budgets(objs, prod=False))


def test_prod_spread_check_catches_single_replicas_and_missing_anti_affinity(
    objs: list[Obj],
) -> None:
    assert check_prod_spread(objs) == []
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")
    assert hpa is not None
    hpa["spec"]["minReplicas"] = 1
    del _deployment(objs, "payments-v2")["spec"]["template"]["spec"]["affinity"]
    errors = "\n".join(check_prod_spread(objs))
    assert "Deployment/gateway: 1 replica(s) in prod" in errors
    assert "Deployment/payments-v2: no pod anti-affinity" in errors


def test_graceful_shutdown_check_catches_a_short_grace_period(objs: list[Obj]) -> None:
    assert check_graceful_shutdown(objs) == []
    _deployment(objs, "payments")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
    del _app_container(objs, "notifications")["lifecycle"]
    errors = "\n".join(check_graceful_shutdown(objs))
    assert "Deployment/payments: terminationGracePeriodSeconds 20" in errors
    assert "Deployment/notifications app: no preStop sleep" in errors


def test_quorum_check_catches_mismatched_voters_and_bootstrap(objs: list[Obj]) -> None:
    assert check_quorums(objs) == []
    kafka = find(objs, "StatefulSet", "kafka")
    consul = find(objs, "StatefulSet", "consul")
    assert kafka and consul
    kafka["spec"]["replicas"] = 5
    consul["spec"]["replicas"] = 4
    consul["spec"]["podManagementPolicy"] = "OrderedReady"
    headless = find(objs, "Service", "kafka-headless")
    assert headless is not None
    headless["spec"]["publishNotReadyAddresses"] = False
    errors = "\n".join(check_quorums(objs))
    assert "kafka: 5 brokers but quorum voters" in errors
    assert "consul: 4 servers but bootstrap_expect 3" in errors
    assert "even number of servers" in errors
    assert "StatefulSet/consul: podManagementPolicy" in errors
    assert "StatefulSet/kafka: its headless Service" in errors
