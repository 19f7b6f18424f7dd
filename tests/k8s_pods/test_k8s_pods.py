"""Pod-spec conformance on a real Docker engine: every container of the dev overlay (with every
component) runs as its pod spec says, against the compose test's stand-ins for the
infrastructure, and then

- its startup, readiness and liveness probes pass as written (path, port, timeout);
- every file its env and args name exists in the image (the locustfile, config files);
- the init containers and the topic Job finish; the versioned Deployments' weights are in
  Consul and the gateway honours them (payments-v2 stays dark);
- an order goes through the gateway; Locust in its own pods drives the gateway without a
  failure; the drill Job starts;
- the applications stay within their memory limit, a SIGKILL from ``pods/exec`` (what
  meshctl's kill-replica sends) kills the app, and a SIGTERM stops each within its grace.

Real: the Docker engine, the project's images, tansu, Redis, the development registry, Locust,
every HTTP request. Not run: images that cannot be pulled here and have no stand-in (listed by
the first test). Runs with ``make test-k8s-pods``; skipped otherwise.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from stack import Result, Stack, docker, http_json

from infra.k8s.cluster import KILL_CONTAINER

API_KEY = "test-api-key-0123456789"  # tests/k8s/k8s_builds.py TEST_SECRETS
NOT_RUN_HERE = {"jaeger", "prometheus", "grafana"}


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def apps(stack: Stack) -> list[Result]:
    return [
        r
        for r in stack.results.values()
        if r.container is not None
        and not r.container.init
        and r.container.pod.labels.get("mesh.demo/tier") == "app"
    ]


def by_pod(stack: Stack, pod: str, container: str) -> Result:
    return next(
        r
        for r in stack.results.values()
        if r.container is not None and r.container.pod.name == pod and r.container.name == container
    )


def report(results: list[Result], pick: Callable[[Result], Any]) -> str:
    return "\n".join(f"{r.ident}: {pick(r)}" for r in results)


def test_every_workload_runs_or_says_why_not(stack: Stack) -> None:
    lines = [
        f"substituted {r.ident}: {r.substitute.why}" for r in stack.results.values() if r.substitute
    ]
    lines += [f"not run {s.pod.ident}: {s.why}" for s in stack.skipped]
    print("\n".join(lines))
    assert {s.pod.workload["metadata"]["name"] for s in stack.skipped} <= NOT_RUN_HERE
    ran = {
        r.container.pod.workload["metadata"]["name"] for r in stack.results.values() if r.container
    }
    wanted = {
        "gateway",
        "orders",
        "orders-v2",
        "inventory",
        "payments",
        "payments-v2",
        "notifications",
        "locust-master",
        "locust-worker",
        "kafka",
        "consul",
        "redis",
        "kafka-topics",
        "otel-collector",
    }
    assert wanted <= ran


def test_every_container_starts_as_its_pod_spec_says(stack: Stack) -> None:
    bad = [r for r in stack.results.values() if r.problems]
    assert not bad, report(bad, lambda r: "; ".join(r.problems))


def test_every_probe_passes_as_written(stack: Stack) -> None:
    failed = [r for r in stack.results.values() if any(not p.passed for p in r.probes)]
    assert not failed, report(
        failed, lambda r: "; ".join(f"{p.kind}: {p.detail}" for p in r.probes if not p.passed)
    )
    for r in apps(stack):
        assert [p.kind for p in r.probes] == ["startupProbe", "readinessProbe", "livenessProbe"]
    ready = {r.ident: round(r.ready_after or 0, 1) for r in stack.results.values() if r.ready_after}
    print("ready after (s):", json.dumps(ready, indent=1))


def test_every_file_the_settings_name_is_in_the_image(stack: Stack) -> None:
    missing = [r for r in stack.results.values() if r.missing_paths]
    assert not missing, report(missing, lambda r: r.missing_paths)
    master = by_pod(stack, "locust-master-pod", "locust")
    assert "/opt/loadtests/locustfile.py" in master.container.paths


def test_init_containers_and_the_topic_job_finish(stack: Stack) -> None:
    for pod in ("orders-v2-pod", "payments-v2-pod"):
        assert by_pod(stack, pod, "weights").exit_code == 0
    topics = by_pod(stack, "kafka-topics-pod", "create-topics")
    code = stack._wait_exit(topics.docker_name, 120)
    assert code == 0, stack.logs(topics.docker_name)


def consul_url(stack: Stack) -> str:
    return f"http://{stack.pod_ips['consul-0']}:8500"


def kv_entry(stack: Stack, key: str) -> dict[str, Any]:
    status, _, entries = http_json(f"{consul_url(stack)}/v1/kv/{key}")
    assert status == 200, f"{key}: {status} {entries}"
    return dict(entries[0])


def test_weights_are_in_consul_before_the_versions_register(stack: Stack) -> None:
    """Consul orders every write with one index: the key was created before the v2 instance
    registered, so the gateway never saw v2 without weights."""
    for service, weights in (("orders", {"v1": 90, "v2": 10}), ("payments", {"v1": 100, "v2": 0})):
        entry = kv_entry(stack, f"mesh/traffic/{service}")
        assert json.loads(base64.b64decode(entry["Value"])) == weights
        _, _, instances = http_json(f"{consul_url(stack)}/v1/catalog/service/{service}")
        v2 = [i for i in instances if i["ServiceMeta"].get("version") == "v2"]
        assert v2, f"no {service} v2 registered: {instances}"
        assert all(entry["CreateIndex"] < i["CreateIndex"] for i in v2), (entry, v2)


def gateway(stack: Stack) -> str:
    return f"http://{stack.pod_ips['gateway-pod']}:8080"


def v1_check(stack: Stack, service: str) -> tuple[str, int]:
    """Status and ModifyIndex of the v1 instance's own check (an index that moves whenever
    the check changes state, so an unchanged index means no flap in between)."""
    _, _, entries = http_json(f"{consul_url(stack)}/v1/health/service/{service}", timeout=30)
    for entry in entries:
        if entry["Service"]["Meta"].get("version") == "v1":
            check = next(c for c in entry["Checks"] if c["ServiceID"] == entry["Service"]["ID"])
            return check["Status"], check["ModifyIndex"]
    return "missing", -1


def test_an_order_goes_through_and_the_green_side_stays_dark(stack: Stack) -> None:
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}

    def placed() -> Any:
        body = json.dumps({"customer_id": "c-k8s", "items": [{"sku": "SKU-001", "quantity": 1}]})
        status, _, order = http_json(
            f"{gateway(stack)}/api/orders", data=body.encode(), headers=headers
        )
        return order if status == 202 else None

    order = until(placed, 60, "an order accepted by the gateway")

    def terminal() -> Any:
        status, _, doc = http_json(f"{gateway(stack)}/api/orders/{order['id']}", headers=headers)
        return doc if status == 200 and doc["status"] != "PENDING" else None

    done = until(terminal, 60, f"order {order['id']} confirmed or cancelled")
    assert done["status"] in ("CONFIRMED", "CANCELLED"), done
    # payments-v2 runs and passes its checks, and gets nothing while v1 can serve. (The
    # gateway sends a version of weight 0 traffic only when the others have no passing
    # instance, so an outage never comes of a weight; on a loaded machine v1's 1 s Consul
    # check can time out: such a request is told apart by v1's check index.)
    samples: list[tuple[float, tuple[str, int]]] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), v1_check(stack, "payments")))
        time.sleep(0.25)
    wrong, flapped = [], 0
    for _ in range(20):
        sent = time.monotonic()
        _, answer, _ = http_json(f"{gateway(stack)}/api/payments/{order['id']}", headers=headers)
        after = v1_check(stack, "payments")
        steady = [s for t, s in samples if t <= sent - 2.0][-1:]
        stable = steady == [after] and after[0] == "passing"
        if answer.get("X-Mesh-Upstream-Version") != "v1":
            if stable:
                wrong.append(answer.get("X-Mesh-Upstream-Version"))
            else:
                flapped += 1
        samples.append((time.monotonic(), after))
        time.sleep(0.25)
    print(f"payments: {flapped} of 20 answered while v1's check had just changed")
    assert not wrong, f"served by {wrong} while payments v1 passed throughout"
    assert flapped < 20, "v1's check never held still: the comparison proves nothing"


def test_locust_in_its_pods_drives_the_gateway(stack: Stack) -> None:
    master = f"http://{stack.pod_ips['locust-master-pod']}:8089"
    until(
        lambda: (http_json(f"{master}/stats/requests")[2] or {}).get("workers"),
        60,
        "a Locust worker connected to the master",
    )
    form = urllib.parse.urlencode({"user_count": 2, "spawn_rate": 2}).encode()
    status, _, answer = http_json(
        f"{master}/swarm", data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and answer.get("success"), answer

    def enough() -> Any:
        stats = http_json(f"{master}/stats/requests")[2]
        total = next(s for s in stats["stats"] if s["name"] == "Aggregated")
        return stats if total["num_requests"] >= 20 else None

    stats = until(enough, 60, "20 requests from Locust")
    http_json(f"{master}/stop")
    total = next(s for s in stats["stats"] if s["name"] == "Aggregated")
    # A wrong LOCUST_HOST fails every request with a connection error, a wrong key with 401,
    # a wrong route with 404: none may appear. A 503 is the gateway saying an upstream had
    # no passing instance for a moment (a 1 s Consul check on a loaded machine), not Locust's
    # configuration: counted and shown, not judged here.
    errors = stats.get("errors") or []
    config = [e for e in errors if "503" not in e["error"] and "429" not in e["error"]]
    print("Locust:", total["num_requests"], "requests,", total["num_failures"], "failed", errors)
    assert total["num_requests"] >= 20 and not config, json.dumps(config, indent=1)


def test_the_drill_job_starts(stack: Stack) -> None:
    stack.start_later()
    drill = by_pod(stack, "locust-drill-pod", "locust")
    assert not drill.problems, drill.problems
    # Locust logs this once the locustfile loaded and users are being started.
    until(lambda: "Ramping to" in stack.logs(drill.docker_name, 50), 60, "the drill ramping up")
    assert stack.running(drill.docker_name), stack.logs(drill.docker_name)


def test_the_applications_stay_within_their_memory_limits(stack: Stack) -> None:
    """Peak memory of each application container (its cgroup's high-water mark) after the
    order, Locust's swarm and 20 s of the drill Job's 50 users: under 80% of its limit."""
    drill = by_pod(stack, "locust-drill-pod", "locust")
    try:
        if stack.running(drill.docker_name):
            loaded_until = time.monotonic() + 20
            until(lambda: time.monotonic() >= loaded_until, 30, "20 s of drill load")
    finally:
        docker("rm", "-f", drill.docker_name, check=False)
    lines, over = [], []
    for r in apps(stack):
        peak = stack.peak_memory(r)
        assert peak is not None and r.container.memory
        r.peak_memory = peak
        share = peak / r.container.memory
        mib, limit = peak / 2**20, r.container.memory / 2**20
        lines.append(f"{r.ident}: peak {mib:.0f} MiB of {limit:.0f} MiB ({share:.0%})")
        if share > 0.8:
            over.append(lines[-1])
    print("\n".join(lines))
    assert not over, "\n".join(over)


def test_a_sigkill_through_exec_kills_the_app(stack: Stack) -> None:
    """What meshctl's kill-replica runs in the pod (the pod shares its process namespace, so
    the app is not PID 1, which would ignore the signal)."""
    victim = by_pod(stack, "notifications-pod", "app")
    done = docker("exec", victim.docker_name, "sh", "-c", KILL_CONTAINER, check=False)
    assert done.returncode == 0, done.stderr
    assert stack._wait_exit(victim.docker_name, 10) == 137


def test_every_application_stops_within_its_grace_period(stack: Stack) -> None:
    running = [r for r in apps(stack) if stack.running(r.docker_name)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(running)) as pool:
        list(pool.map(stack.stop_gracefully, running))
    late = [r for r in running if r.stop is None or r.stop[0] != 0]
    assert not late, report(late, lambda r: r.stop)


def test_nothing_is_left_behind(stack: Stack) -> None:
    stack.down()
    assert stack.leftovers() == []
