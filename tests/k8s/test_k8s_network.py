"""The NetworkPolicies allow exactly the flows of the design: computed from the policies by a
small evaluator and compared with the design's list both ways (every design flow allowed,
nothing else allowed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from k8s_builds import BUILD_SPECS, get_build
from k8s_checks import (
    EXTERNAL_PEERS,
    NAMESPACE,
    Flow,
    Obj,
    Peer,
    allowed_flows,
    design_flows,
    namespace_peers,
    of_kind,
    operational_flows,
)

WITH_POLICIES = [s.id for s in BUILD_SPECS if "network-policies" in s.effective]


def expected_flows(objs: list[Obj]) -> set[Flow]:
    present = {p.name for p in namespace_peers(objs)}
    return design_flows(present) | operational_flows(present)


def _diff(allowed: set[Flow], expected: set[Flow]) -> str:
    missing = "\n  ".join(str(f) for f in sorted(expected - allowed))
    extra = "\n  ".join(str(f) for f in sorted(allowed - expected))
    return (
        f"design flows not allowed:\n  {missing or '-'}\n"
        f"allowed beyond the design:\n  {extra or '-'}"
    )


@pytest.mark.parametrize("spec_id", WITH_POLICIES)
def test_policies_allow_exactly_the_design_flows(builds: dict[str, Any], spec_id: str) -> None:
    objs = get_build(builds, spec_id).objects
    allowed = allowed_flows(objs)
    expected = expected_flows(objs)
    assert allowed == expected, _diff(allowed, expected)


def test_the_full_build_exercises_every_design_flow(builds: dict[str, Any]) -> None:
    """With every component, each flow of the design has both of its ends in the build."""
    objs = get_build(builds, "prod[all]").objects
    present = {p.name for p in namespace_peers(objs)}
    everything = design_flows(present | {"locust", "kafka-topics"})
    assert design_flows(present) == everything
    assert len(everything) > 60


def test_every_pod_is_under_default_deny(builds: dict[str, Any]) -> None:
    objs = get_build(builds, "dev[network-policies]").objects
    deny = [p for p in of_kind(objs, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert any(
        set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress")
        for p in deny
    )


@pytest.fixture
def policed(builds: dict[str, Any]) -> list[Obj]:
    return copy.deepcopy(get_build(builds, "dev[all]").objects)


def _policy(objs: list[Obj], name: str) -> Obj:
    return next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name)


def test_a_missing_policy_shows_as_missing_design_flows(policed: list[Obj]) -> None:
    objs = [
        o
        for o in policed
        if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "services")
    ]
    missing = expected_flows(objs) - allowed_flows(objs)
    assert Flow("gateway", "orders", 8080) in missing
    assert Flow("consul", "payments", 8080) in missing
    dns = [
        o
        for o in policed
        if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "allow-dns-egress")
    ]
    assert Flow("redis", "kube-dns", 53, "UDP") in expected_flows(dns) - allowed_flows(dns)


def test_an_over_broad_policy_shows_as_extra_flows(policed: list[Obj]) -> None:
    _policy(policed, "redis")["spec"]["egress"] = [{}]  # redis may now go anywhere
    # A port range on one side only changes nothing: the other side still names 4317.
    _policy(policed, "jaeger")["spec"]["ingress"][0]["ports"] = [{"port": 4310, "endPort": 4320}]
    assert Flow("otel-collector", "jaeger", 4318) not in allowed_flows(policed)
    _policy(policed, "otel-collector")["spec"]["egress"][0]["ports"] = [
        {"port": 4310, "endPort": 4320}
    ]
    extra = allowed_flows(policed) - expected_flows(policed)
    assert Flow("redis", "outside", 443) in extra
    assert Flow("redis", "kafka", 9092) not in extra  # kafka's own ingress still says no
    assert Flow("otel-collector", "jaeger", 4318) in extra  # an undeclared port in the range


def test_removing_default_deny_opens_everything_else(policed: list[Obj]) -> None:
    objs = [
        o
        for o in policed
        if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "default-deny-all")
    ]
    extra = allowed_flows(objs) - expected_flows(objs)
    # The Job's and the Locust workers' ingress were closed only by default-deny; the
    # applications' egress stays closed by their own policies.
    assert Flow("outside", "kafka-topics", 80) in extra
    assert Flow("outside", "locust", 22) in extra
    assert not {f for f in extra if f.src == "orders"}


def test_flows_from_outside_reach_only_the_gateway(builds: dict[str, Any]) -> None:
    allowed = allowed_flows(get_build(builds, "prod[all]").objects)
    external = {p.name for p in EXTERNAL_PEERS}
    reached = {(f.src, f.dst) for f in allowed if f.src in external}
    assert reached == {(name, "gateway") for name in external} | {("keda", "kafka")}


# ------------------------------------------------------------------------------------------
# The evaluator itself, on hand-made policies.


def _deployment(name: str, port: int, port_name: str = "http") -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x:1",
                            "ports": [{"name": port_name, "containerPort": port}],
                        }
                    ]
                },
            },
        },
    }


def _netpol(name: str, spec: dict[str, Any]) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def test_evaluator_without_policies_allows_everything() -> None:
    objs = [_deployment("a", 8080), _deployment("b", 9000)]
    allowed = allowed_flows(objs, external=())
    assert Flow("a", "b", 9000) in allowed and Flow("b", "a", 8080, "UDP") in allowed


def test_evaluator_named_ports_and_ranges() -> None:
    objs = [
        _deployment("a", 8080),
        _deployment("b", 9000, "api"),
        _netpol(
            "b-in",
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "b"}},
                "ingress": [{"ports": [{"port": "api"}]}],
            },
        ),
        _netpol(
            "a-out",
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "a"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {}}],
                        "ports": [{"port": 8990, "endPort": 9010, "protocol": "TCP"}],
                    }
                ],
            },
        ),
    ]
    allowed = allowed_flows(objs, external=())
    assert Flow("a", "b", 9000) in allowed
    assert Flow("a", "b", 9000, "UDP") not in allowed  # named port is TCP
    assert Flow("a", "b", 8995) not in allowed  # b's ingress allows only its named port
    assert Flow("a", "a", 8080) not in allowed  # a's egress range stops at 9010
    assert Flow("b", "a", 8080) in allowed  # a's ingress is not isolated


def test_evaluator_namespace_selectors_and_ip_blocks() -> None:
    outsider = Peer("internet", None, ip="198.51.100.5")
    office = Peer("office", None, ip="192.0.2.10")
    other = Peer(
        "monitoring", "monitoring", labels={"app": "scraper"}, namespace_labels={"team": "obs"}
    )
    objs = [
        _deployment("a", 8080),
        _netpol(
            "a-in",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "obs"}},
                                "podSelector": {"matchLabels": {"app": "scraper"}},
                            }
                        ]
                    },
                    {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]},
                ],
            },
        ),
    ]
    allowed = allowed_flows(objs, external=(outsider, office, other))
    assert Flow("monitoring", "a", 8080) in allowed
    assert Flow("office", "a", 8080) in allowed
    assert Flow("internet", "a", 8080) not in allowed
    assert Flow("a", "a", 8080) not in allowed  # same namespace, but not from monitoring


def test_design_flows_only_name_what_is_present() -> None:
    assert design_flows({"gateway"}, external=()) == set()
    assert design_flows({"gateway", "orders"}, external=()) == {Flow("gateway", "orders", 8080)}
    with_dns = design_flows({"redis"}, external=EXTERNAL_PEERS)
    assert with_dns == {Flow("redis", "kube-dns", 53, "UDP"), Flow("redis", "kube-dns", 53, "TCP")}
