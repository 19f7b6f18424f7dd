"""The drills' operations on the k8s runtime (the fake API server, the development registry
as Consul): the autoscale drill's set-up and restore, and the kill-replica drill end to end
(the pod's app SIGKILLed, the kubelet restarting it, the service healthy again)."""

from __future__ import annotations

from fake_kube_api import FakeApiServer

from infra.k8s.runtime import K8sRuntime
from infra.runtime.models import GatewayInfo
from loadtests.drills.catalog import Autoscale, KillReplica
from loadtests.drills.engine import DrillContext, DrillOptions


def context(runtime: K8sRuntime, service: str, lines: list[str]) -> DrillContext:
    gateway = GatewayInfo(url="http://127.0.0.1:8080", api_key="test-key")
    return DrillContext(runtime, gateway, DrillOptions(service=service), lines.append)


def test_the_autoscale_drill_turns_the_hpas_on_and_leaves_them_on(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    lines: list[str] = []
    ctx = context(runtime, "payments", lines)
    drill = Autoscale(DrillOptions(service="payments", duration=40))
    drill.prepare(ctx)  # raised "the HorizontalPodAutoscalers are the autoscaler" before
    hpa = api.cluster.hpas["payments"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert runtime.autoscale().enabled
    drill.restore(ctx)
    assert runtime.autoscale().enabled  # k8s autoscales by default: the drill leaves it so
    assert "mesh.demo/autoscale-paused" not in hpa["metadata"].get("annotations", {})


def test_the_kill_replica_drill_crashes_a_pod_and_sees_it_come_back(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    lines: list[str] = []
    ctx = context(runtime, "payments", lines)
    drill = KillReplica(DrillOptions(service="payments", duration=30))
    drill.prepare(ctx)
    drill.operate(ctx)
    messages = [e["message"] for e in ctx.events]
    assert messages[0].startswith("killed payments-")
    assert "payments: 1 of 2 healthy" in messages
    assert messages[-1] == "payments: back to 2 healthy replicas"
    assert api.cluster.deleted_pods == []  # a crash, not a deletion
    [(victim, container, command)] = api.cluster.execs
    assert messages[0].startswith(f"killed {victim}")
    assert container == "app" and command[:2] == ["sh", "-c"]
    assert sum(r.restarts for r in runtime.replicas("payments")) == 1


def test_a_killed_pod_keeps_its_name(runtime: K8sRuntime) -> None:
    """The victim's container restarts in place: no new pod, as after a real crash."""
    service = "orders"
    before = {r.id for r in runtime.replicas(service) if r.version == "v1"}
    victim = sorted(before)[0]
    runtime.kill_replica(victim)
    runtime.wait_healthy(service, 4, timeout=10, interval=0.01)
    assert {r.id for r in runtime.replicas(service) if r.version == "v1"} == before
