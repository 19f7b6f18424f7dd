"""stop_infra / start_infra on the k8s runtime: the StatefulSets scaled to 0 and back."""

from __future__ import annotations

import pytest
from fake_kube_api import FakeApiServer

from infra.k8s.runtime import STOPPED, K8sRuntime
from infra.runtime.base import RuntimeFailure


def scales(api: FakeApiServer, name: str) -> list[int]:
    return [
        body["spec"]["replicas"]
        for method, path, _, body in api.cluster.requests
        if method == "PATCH" and path.endswith(f"/statefulsets/{name}/scale")
    ]


@pytest.mark.parametrize(("part", "replicas"), [("kafka", 3), ("redis", 1), ("consul", 1)])
def test_stop_scales_to_zero_and_start_brings_back_what_it_had(
    api: FakeApiServer, runtime: K8sRuntime, part: str, replicas: int
) -> None:
    sts = api.cluster.statefulsets[part]
    sts["spec"]["replicas"] = replicas
    api.cluster._sts_set(sts, replicas, replicas)

    runtime.stop_infra(part)
    assert scales(api, part) == [0]
    assert sts["status"]["replicas"] == 0 and "readyReplicas" not in sts["status"]
    assert sts["metadata"]["annotations"][STOPPED] == str(replicas)
    stopped = runtime.status().infra[part]
    assert (stopped["healthy"], stopped["replicas"]) == (False, 0)
    runtime.stop_infra(part)  # already stopped: nothing more to do, the count is kept
    assert scales(api, part) == [0] and sts["metadata"]["annotations"][STOPPED] == str(replicas)

    lines: list[str] = []
    runtime.start_infra(part, lines.append)
    assert scales(api, part) == [0, replicas]
    assert sts["status"]["readyReplicas"] == replicas
    assert STOPPED not in sts["metadata"].get("annotations", {})
    # One pod at a time, each getting ready before the next (the fake controller's pace).
    assert lines[0] == f"{part}: 0/{replicas} ready, 0 running"
    assert lines[-1] == f"{part}: {replicas}/{replicas} ready, {replicas} running"
    assert f"{part}: 0/{replicas} ready, 1 running" in lines
    assert runtime.status().infra[part]["healthy"] is True


def test_a_kafka_that_would_lose_its_topics_is_not_stopped(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    kafka = api.cluster.statefulsets["kafka"]
    kafka["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = "Delete"
    with pytest.raises(RuntimeFailure, match="its topics would be lost; not stopping it"):
        runtime.stop_infra("kafka")
    kafka["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = "Retain"
    del kafka["spec"]["volumeClaimTemplates"]
    with pytest.raises(RuntimeFailure, match="keeps no data across a scale to 0"):
        runtime.stop_infra("kafka")
    assert scales(api, "kafka") == []
    assert kafka["status"]["readyReplicas"] == 1


def test_unknown_parts_and_stuck_starts_are_one_line(
    api: FakeApiServer, runtime: K8sRuntime
) -> None:
    with pytest.raises(RuntimeFailure, match=r"unknown infrastructure part 'zookeeper' \(known:"):
        runtime.stop_infra("zookeeper")
    runtime.stop_infra("redis")
    # A start that never gets there ends in one line with the last state seen.
    api.cluster.stuck.add("redis")
    with pytest.raises(RuntimeFailure, match=r"^redis: 0/1 ready, 0 running after 0s$"):
        runtime.start_infra("redis", timeout=0.2)
    assert api.cluster.statefulsets["redis"]["metadata"]["annotations"][STOPPED] == "1"


def test_a_consul_quorum_is_not_stopped_whole(api: FakeApiServer, runtime: K8sRuntime) -> None:
    """Three servers stopped together come back with new pod IPs and never elect a leader
    (Raft keeps the old addresses; hashicorp/consul#10678): prod's Consul is refused."""
    consul = api.cluster.statefulsets["consul"]
    consul["spec"]["replicas"] = 3
    api.cluster._sts_set(consul, 3, 3)
    with pytest.raises(RuntimeFailure, match=r"runs 3 Consul servers: .* elect no leader"):
        runtime.stop_infra("consul")
    assert scales(api, "consul") == []
    assert STOPPED not in (consul["metadata"].get("annotations") or {})
