"""The pod-spec translation (podspec.py) without an engine: what ``docker run`` gets for the
rendered manifests, checked against the kubelet's documented behaviour; and that the one
stack ``make test-k8s-pods`` runs (dev with every component) holds every container of dev
alone and of dev with each component."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from k8s_builds import COMPONENTS, BuildSpec
from pods_support import ALL, render
from podspec import (
    Obj,
    Unsupported,
    container_plan,
    expand,
    find,
    named_paths,
    non_root_problem,
    pod_for,
    run_argv,
    service_port_problems,
)


def plan(objs: list[Obj], kind: str, name: str, container: str, init: bool = False):
    workload = find(objs, kind, name)
    assert workload is not None
    pod = pod_for(objs, workload)
    key = "initContainers" if init else "containers"
    spec = next(c for c in pod.spec[key] if c["name"] == container)
    return pod, container_plan(objs, pod, spec, init, "10.244.0.7")


def test_variable_expansion_follows_kubernetes() -> None:
    defined = {"POD_IP": "10.0.0.1", "A": "x"}
    assert expand("$(POD_IP):8080", defined) == "10.0.0.1:8080"
    assert expand("$(NOPE)-$(A)", defined) == "$(NOPE)-x"  # undefined stays as written
    assert expand("$$(A) $$", defined) == "$(A) $"


def test_an_app_container_gets_its_env_user_and_security(rendered: list[Obj]) -> None:
    pod, c = plan(rendered, "Deployment", "orders", "app")
    assert c.env["ADVERTISE_ADDRESS"] == "10.244.0.7"  # $(POD_IP) from the downward API
    assert c.env["OTEL_RESOURCE_ATTRIBUTES"].startswith("service.version=v1,k8s.pod.name=orders-")
    assert c.env["CONSUL_HTTP_ADDR"] == "http://consul:8500"  # from mesh-config (envFrom)
    assert c.env["ADMIN_TOKEN"] == "test-admin-token"  # the Secret, decoded
    assert c.env["LOG_LEVEL"] == "DEBUG"  # the dev overlay's merge
    assert (c.user, c.groups, c.read_only, c.no_new_privileges) == (
        "10001:10001",
        [10001],
        True,
        True,
    )
    assert c.cap_drop == ["ALL"] and c.memory == 256 << 20 and c.cpus == 0.3
    assert c.scratch == {"/tmp": (0o2777, 10001)}  # emptyDir with the pod's fsGroup
    assert (c.entrypoint, c.cmd, c.grace, c.pre_stop) == (None, None, 30, 5)  # image defaults
    assert [p.kind for p in c.probes] == ["startupProbe", "readinessProbe", "livenessProbe"]
    assert c.port("http") == 8080
    argv = run_argv(c, "x", "sandbox", True, {"/tmp": "/host/tmp"})
    assert argv[:8] == [
        "docker",
        "run",
        "--name",
        "x",
        "--network",
        "container:sandbox",
        "--pid",
        "container:sandbox",
    ]
    assert (
        "--read-only" in argv
        and ["--cap-drop", "ALL"] == argv[argv.index("--cap-drop") : argv.index("--cap-drop") + 2]
    )
    assert "-v" in argv and "/host/tmp:/tmp:rw" in argv
    assert argv[-1].endswith("orders:0.1.0")
    assert {"orders", "orders.mesh.svc"} <= set(pod.aliases)


def test_command_replaces_the_entrypoint_and_args_the_command(rendered: list[Obj]) -> None:
    _, master = plan(rendered, "Deployment", "locust-master", "locust")
    assert master.entrypoint == ["locust"] and master.cmd == [
        "--master",
        "--web-port=8089",
        "--master-bind-port=5557",
    ]
    argv = run_argv(master, "m", "s", False, {})
    assert argv[argv.index("--entrypoint") + 1] == "locust" and argv[-3:] == master.cmd
    assert "/opt/loadtests/locustfile.py" in master.paths  # LOCUST_LOCUSTFILE
    _, weights = plan(rendered, "Deployment", "payments-v2", "weights", init=True)
    assert weights.files == {"/etc/mesh/traffic": {"weights.json": '{"v1": 100, "v2": 0}\n'}}
    assert weights.env == {"CONSUL_HTTP_ADDR": "http://consul:8500"}
    assert "/etc/mesh/traffic/weights.json" in weights.paths


def test_a_statefulset_pod_has_its_ordinal_and_dns_names(rendered: list[Obj]) -> None:
    pod, kafka = plan(rendered, "StatefulSet", "kafka", "kafka")
    assert pod.name == "kafka-0"
    assert kafka.env["KAFKA_NODE_ID"] == "0"  # metadata.labels['apps.kubernetes.io/pod-index']
    assert (
        kafka.env["KAFKA_ADVERTISED_LISTENERS"]
        == "PLAINTEXT://kafka-0.kafka-headless.mesh.svc:9092"
    )
    assert "kafka-0.kafka-headless.mesh.svc" in pod.aliases and "kafka" in pod.aliases
    assert kafka.scratch["/var/lib/kafka/data"] == (0o2777, 1000)  # the claim, fsGroup 1000
    assert service_port_problems(rendered, pod) == []


def test_run_as_non_root_is_refused_as_the_kubelet_does(rendered: list[Obj]) -> None:
    _, c = plan(rendered, "Deployment", "orders", "app")
    assert non_root_problem(c, "10001:10001") is None
    c.user = None
    assert "image has non-numeric user (mesh)" in (non_root_problem(c, "mesh") or "")
    assert "image will run as root" in (non_root_problem(c, "") or "")


def test_what_is_not_emulated_is_said(rendered: list[Obj]) -> None:
    objs = json.loads(json.dumps(rendered))
    orders = find(objs, "Deployment", "orders")
    assert orders is not None
    spec = orders["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    spec["containers"][0]["volumeMounts"].append({"name": "host", "mountPath": "/host"})
    with pytest.raises(Unsupported, match="volume host of type \\['hostPath'\\]"):
        plan(objs, "Deployment", "orders", "app")
    gateway = find(objs, "Service", "gateway")
    assert gateway is not None
    gateway["spec"]["ports"][0]["port"] = 80
    pod = pod_for(objs, find(objs, "Deployment", "gateway"))  # type: ignore[arg-type]
    assert service_port_problems(objs, pod) == [
        "Service gateway maps port 80 to 8080: on Docker the name reaches the pod's own port"
    ]


def test_paths_are_what_settings_name() -> None:
    env = {"A": "/opt/x.py", "B": "http://x:1/y", "C": "/a,/b", "D": "rel/path"}
    assert named_paths(env, ["--config=/etc/c.yaml", "-f", "/f.py", "--dir", "/data"]) == [
        "/opt/x.py",
        "/etc/c.yaml",
        "/f.py",
        "/data",
    ]


def _containers(objs: list[Obj]) -> dict[str, str]:
    out = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = o["spec"]["template"]["spec"]
            for key in ("initContainers", "containers"):
                for c in spec.get(key) or []:
                    out[f"{o['kind']}/{o['metadata']['name']}/{c['name']}"] = json.dumps(
                        [c, spec.get("volumes"), spec.get("securityContext")], sort_keys=True
                    )
    return out


def test_the_full_dev_stack_holds_every_container_of_each_dev_build(
    rendered: list[Obj], tmp_path: Path
) -> None:
    """make test-k8s-pods runs one stack, dev with every component: each container of dev
    alone and with each component is in it, with the same spec, so it is run too."""
    everything = _containers(rendered)
    for spec in [BuildSpec("dev", ()), *(BuildSpec("dev", (c,)) for c in COMPONENTS)]:
        for key, value in _containers(render(tmp_path, spec)).items():
            assert everything.get(key) == value, f"{spec.id}: {key} differs from {ALL.id}'s"
