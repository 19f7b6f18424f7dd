"""Run a rendered overlay's pods on a Docker engine, each as its pod spec says
(:mod:`podspec`), and probe them as the kubelet would.

The infrastructure images the manifests pin (apache/kafka, hashicorp/consul, redis, the
collector, Jaeger, Prometheus, Grafana) cannot be pulled on these machines. Where the compose
test has a stand-in, the pod runs on it with its own security context, volumes, limits and the
probes the stand-in can answer (:data:`SUBSTITUTES` says what and why); a pod with neither its
image nor a stand-in is listed as not run. Everything is labelled ``meshk8s.run=<id>`` and
removed by :meth:`Stack.down`; nothing is published on the host (the host reaches the pods on
the test's own bridge network, as a node reaches its pods).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podspec import (
    Container,
    Obj,
    Pod,
    Probe,
    Unsupported,
    container_plan,
    mount_args,
    named_paths,
    non_root_problem,
    pod_for,
    run_argv,
    service_port_problems,
)

LABEL = "meshk8s.run"
PROJECT = "mesh-demo/"


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}...: {result.stderr.strip()[-400:]}")
    return result


# What stands in for the collector: 200 to every request, on the ports its pod spec names.
OTLP_SINK = """
import http.server, threading
class Sink(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
servers = [http.server.ThreadingHTTPServer(("0.0.0.0", p), Sink) for p in (4318, 8888, 13133)]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


@dataclass(frozen=True)
class Substitute:
    """A stand-in for an image that cannot be pulled here. ``argv``: the stand-in's own
    entrypoint and command (None: the pod spec's, run on the stand-in); ``env``: the
    stand-in's (None: the pod spec's); ``probes``: the probes it can answer."""

    image: str  # a project image name (mesh-demo/<image>:<version>)
    why: str
    argv: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] | None = None
    probes: frozenset[str] = frozenset({"startupProbe", "readinessProbe", "livenessProbe"})


SUBSTITUTES = {
    ("StatefulSet", "kafka"): Substitute(
        "tansu",
        "apache/kafka cannot be pulled here: tansu (a Kafka-protocol broker, the compose "
        "test's stand-in) runs with the pod's security context, volumes and limits; the pod's "
        "env and command are the apache/kafka image's; its liveness probe dials the KRaft "
        "controller port 9093, which tansu has not",
        argv=(
            "/usr/local/bin/tansu",
            "broker",
            "--listener-url=tcp://0.0.0.0:9092",
            "--advertised-listener-url=tcp://kafka:9092",
        ),
        env=(),
        probes=frozenset({"startupProbe", "readinessProbe"}),
    ),
    ("StatefulSet", "consul"): Substitute(
        "consul-dev",
        "hashicorp/consul cannot be pulled here: the project's Consul-API development registry "
        "stands in; its readiness probe is an exec of the consul image's curl",
        argv=(
            "/opt/mesh/entrypoint.sh",
            "python",
            "-m",
            "infra.consul.devregistry",
            "--host=0.0.0.0",
            "--port=8500",
            "--allow-remote",
        ),
        env=(),
        probes=frozenset({"startupProbe", "livenessProbe"}),
    ),
    ("StatefulSet", "redis"): Substitute(
        "redis",
        "redis:7.4.6 cannot be pulled here: Debian's redis-server 7.0 runs the pod's own "
        "command, args and probes",
    ),
    ("Deployment", "otel-collector"): Substitute(
        "consul-dev",
        "otel/opentelemetry-collector-contrib cannot be pulled here: an OTLP/HTTP sink (Python's "
        "http.server in a project image) answers the services' span exports on 4318 and the "
        "probes on 13133, so that no service waits on an absent collector (the OTel SDK retries "
        "an export for ~10 s, at shutdown too)",
        argv=("python", "-c", OTLP_SINK),
        env=(),
    ),
    ("Job", "kafka-topics"): Substitute(
        "gateway",
        "apache/kafka's kafka-topics.sh is not here: `meshctl infra topics` (the compose "
        "stack's kafka-init) creates the same topics (infra/kafka/topics.py, which tests/k8s "
        "compares with the Job's list)",
        argv=("sh", "-c", "until meshctl infra topics; do sleep 1; done"),
        env=(("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"), ("MESH_HOME", "/tmp/mesh")),
        probes=frozenset(),
    ),
}


@dataclass
class ProbeResult:
    kind: str
    passed: bool
    after: float  # seconds since the container started
    detail: str


@dataclass
class Result:
    container: Container
    docker_name: str
    substitute: Substitute | None = None
    exit_code: int | None = None  # of an init container or a Job, or a crash
    probes: list[ProbeResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing_paths: list[str] = field(default_factory=list)
    skipped_probes: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ready_after: float | None = None
    peak_memory: int | None = None
    stop: tuple[int, float] | None = None  # exit code and seconds of a graceful stop

    @property
    def ident(self) -> str:
        return self.container.ident


@dataclass
class Skipped:
    pod: Pod
    why: str


class Stack:
    def __init__(self, objs: list[Obj], run_id: str, prefix: str, version: str) -> None:
        self.objs = objs
        self.run = run_id
        self.prefix = prefix
        self.version = version
        self.network = f"meshk8s-{run_id}"
        self.results: dict[str, Result] = {}
        self.skipped: list[Skipped] = []
        self.pod_ips: dict[str, str] = {}
        self.sandboxes: dict[str, str] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix=f"meshk8s-{run_id}-"))
        self._lock = threading.Lock()
        self._image_users: dict[str, str | None] = {}
        self._scratch: dict[str, str] = {}

    # -- images ---------------------------------------------------------------------------------
    def image(self, name: str) -> str:
        """A manifest's image as this engine has it (mesh-demo/x -> <prefix>/x)."""
        if name.startswith(PROJECT):
            return f"{self.prefix}/{name.removeprefix(PROJECT)}"
        return name

    def stand_in(self, sub: Substitute) -> str:
        return f"{self.prefix}/{sub.image}:{self.version}"

    def image_user(self, image: str) -> str | None:
        """The image's USER, or None when the engine has no such image."""
        if image not in self._image_users:
            found = docker("image", "inspect", "--format", "{{.Config.User}}", image, check=False)
            self._image_users[image] = found.stdout.strip() if found.returncode == 0 else None
        return self._image_users[image]

    # -- plan -----------------------------------------------------------------------------------
    def workloads(self) -> list[Obj]:
        return [o for o in self.objs if o["kind"] in ("Deployment", "StatefulSet", "Job")]

    def _decide(self, workload: Obj) -> tuple[Pod, Substitute | None] | Skipped:
        pod = pod_for(self.objs, workload)
        key = (workload["kind"], workload["metadata"]["name"])
        images = [
            c["image"] for k in ("initContainers", "containers") for c in pod.spec.get(k) or []
        ]
        if all(self.image_user(self.image(i)) is not None for i in images):
            return pod, None
        sub = SUBSTITUTES.get(key)
        if sub is not None and self.image_user(self.stand_in(sub)) is not None:
            return pod, sub
        missing = [i for i in images if self.image_user(self.image(i)) is None]
        return Skipped(pod, f"{', '.join(missing)}: not on this engine and no stand-in")

    # -- up -------------------------------------------------------------------------------------
    def up(self, later: frozenset[tuple[str, str]] = frozenset()) -> None:
        """Every pod at once (as `kubectl apply` starts them), but the Jobs named in
        ``later``, which :meth:`start_later` runs."""
        docker("network", "create", "--internal", "--label", f"{LABEL}={self.run}", self.network)
        plans = [self._decide(w) for w in self.workloads()]
        self.skipped = [p for p in plans if isinstance(p, Skipped)]
        self._later = [
            p
            for p in plans
            if not isinstance(p, Skipped)
            and (p[0].workload["kind"], p[0].workload["metadata"]["name"]) in later
        ]
        runnable = [p for p in plans if not isinstance(p, Skipped) and p not in self._later]
        with ThreadPoolExecutor(max_workers=len(runnable) or 1) as pool:
            list(pool.map(lambda p: self._start_pod(*p), runnable))

    def start_later(self) -> None:
        with ThreadPoolExecutor(max_workers=len(self._later) or 1) as pool:
            list(pool.map(lambda p: self._start_pod(*p), self._later))

    def _start_pod(self, pod: Pod, sub: Substitute | None) -> None:
        problems = service_port_problems(self.objs, pod)
        sandbox = f"meshk8s-{self.run}-{pod.name}"
        first = pod.spec["containers"][0]["image"]
        sandbox_image = self.stand_in(sub) if sub else self.image(first)
        argv = ["run", "-d", "--name", sandbox, "--label", f"{LABEL}={self.run}"]
        argv += ["--network", self.network, "--hostname", pod.name]
        for alias in pod.aliases:
            argv += ["--network-alias", alias]
        # The pause container: sleeps as PID 1 of the pod, unprivileged.
        argv += ["--user", "65535:65535", "--read-only", "--cap-drop", "ALL"]
        argv += ["--entrypoint", "sleep", sandbox_image, "infinity"]
        docker(*argv)
        ip = docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", sandbox
        ).stdout.strip()
        with self._lock:
            self.pod_ips[pod.name], self.sandboxes[pod.name] = ip, sandbox
        share_pid = bool(pod.spec.get("shareProcessNamespace"))
        for key, init in (("initContainers", True), ("containers", False)):
            for spec in pod.spec.get(key) or []:
                result = self._start_container(pod, spec, init, sub, sandbox, share_pid, ip)
                result.problems[:0] = problems
                problems = []
                if init and (result.problems or result.exit_code != 0):
                    return  # the kubelet would not start the app containers

    def _start_container(
        self,
        pod: Pod,
        spec: Obj,
        init: bool,
        sub: Substitute | None,
        sandbox: str,
        share_pid: bool,
        ip: str,
    ) -> Result:
        name = f"meshk8s-{self.run}-{pod.name}-{spec['name']}"
        try:
            plan = container_plan(self.objs, pod, spec, init, ip)
        except Unsupported as exc:
            placeholder = Result(container=None, docker_name=name)  # type: ignore[arg-type]
            placeholder.problems.append(str(exc))
            with self._lock:
                self.results[f"{pod.ident} {spec['name']}"] = placeholder
            return placeholder
        plan.image = self.stand_in(sub) if sub else self.image(plan.image)
        if sub is not None:
            if sub.argv is not None:
                plan.entrypoint, plan.cmd = [sub.argv[0]], list(sub.argv[1:])
            if sub.env is not None:
                plan.env = dict(sub.env)
            # What the stand-in's own settings name is the stand-in's business, not the spec's.
            env = {} if sub.env is not None else plan.env
            plan.paths = named_paths(env, [*(plan.entrypoint or []), *(plan.cmd or [])])
        result = Result(plan, name, sub)
        with self._lock:
            self.results[plan.ident] = result
        refused = non_root_problem(plan, self.image_user(plan.image) or "")
        if refused:
            result.problems.append(refused)
            return result
        dirs = self._volume_dirs(plan)
        argv = run_argv(plan, name, sandbox, share_pid, dirs)
        argv[2:2] = ["-d", "--label", f"{LABEL}={self.run}"]
        result.started_at = time.monotonic()
        started = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if started.returncode != 0:
            result.problems.append(f"docker run failed: {started.stderr.strip()[-300:]}")
            return result
        result.missing_paths = self._missing_paths(plan, name, dirs)
        if init:
            result.exit_code = self._wait_exit(name, 180)
            if result.exit_code != 0:
                result.problems.append(
                    f"init container exited {result.exit_code}: {self.logs(name, 5)}"
                )
        return result

    def _volume_dirs(self, plan: Container) -> dict[str, str]:
        """A host directory per volume of the container: its ConfigMap or Secret files, or a
        fresh one with the mode and group the kubelet gives an emptyDir or a claim. Volumes are
        the pod's: containers of one pod mounting one volume share the directory."""
        dirs = {}
        for path, files in plan.files.items():
            host = Path(tempfile.mkdtemp(dir=self._tmp))
            host.chmod(0o755)
            for file, content in files.items():
                (host / file).write_text(content)
                (host / file).chmod(0o644)
            dirs[path] = str(host)
        for path, (mode, group) in plan.scratch.items():
            key = f"{plan.pod.name}:{path}"
            with self._lock:
                if key not in self._scratch:
                    host = Path(tempfile.mkdtemp(dir=self._tmp))
                    if group is not None:
                        os.chown(host, 0, group)
                    host.chmod(mode)
                    self._scratch[key] = str(host)
            dirs[path] = self._scratch[key]
        return dirs

    def _missing_paths(self, plan: Container, name: str, dirs: dict[str, str]) -> list[str]:
        """The files the env and args name, looked for in the image with the container's own
        mounts and user (its root filesystem as it starts, whatever the app does later)."""
        if not plan.paths:
            return []
        argv = ["run", "--rm", "--label", f"{LABEL}={self.run}", "--network", "none"]
        if plan.user:
            argv += ["--user", plan.user]
        argv += mount_args(plan, dirs)
        script = 'for p; do [ -e "$p" ] || echo "$p"; done'
        argv += ["--entrypoint", "sh", plan.image, "-c", script, "_", *plan.paths]
        found = docker(*argv, check=False)
        return found.stdout.split()

    # -- probing --------------------------------------------------------------------------------
    def running(self, name: str) -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", name, check=False)
        return state.stdout.strip() == "true"

    def exit_code(self, name: str) -> int | None:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name, check=False)
        running, _, code = state.stdout.strip().partition(" ")
        return None if running == "true" or not code else int(code)

    def _wait_exit(self, name: str, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code(name)
            if code is not None:
                return code
            time.sleep(0.5)
        return None

    def logs(self, name: str, lines: int = 20) -> str:
        found = docker("logs", "--tail", str(lines), name, check=False)
        return (found.stdout + found.stderr).strip().replace("\n", " | ")[-1500:]

    def probe_once(self, result: Result, probe: Probe) -> tuple[bool, str]:
        spec, container = probe.spec, result.container
        ip = self.pod_ips[container.pod.name]
        if "httpGet" in spec:
            get = spec["httpGet"]
            port = container.port(get["port"])
            scheme, host = get.get("scheme", "HTTP").lower(), get.get("host") or ip
            url = f"{scheme}://{host}:{port}{get.get('path', '/')}"
            request = urllib.request.Request(
                url,
                headers={h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                | {"User-Agent": "kube-probe/1.32"},
            )
            try:
                with urllib.request.urlopen(request, timeout=probe.timeout) as answer:
                    return 200 <= answer.status < 400, f"GET {url}: {answer.status}"
            except urllib.error.HTTPError as exc:
                return 200 <= exc.code < 400, f"GET {url}: {exc.code}"
            except OSError as exc:
                return False, f"GET {url}: {exc}"
        if "tcpSocket" in spec:
            port = container.port(spec["tcpSocket"]["port"])
            try:
                with socket.create_connection((ip, port), timeout=probe.timeout):
                    return True, f"tcp {ip}:{port} open"
            except OSError as exc:
                return False, f"tcp {ip}:{port}: {exc}"
        if "exec" in spec:
            command = spec["exec"]["command"]
            try:
                done = docker(
                    "exec", result.docker_name, *command, timeout=probe.timeout + 5, check=False
                )
            except subprocess.TimeoutExpired:
                return False, f"exec {command}: timed out"
            return done.returncode == 0, f"exec {command}: exit {done.returncode}"
        raise Unsupported(f"{result.ident}: {probe.kind} of type {sorted(spec)}")

    def probe_until(self, result: Result, probe: Probe, budget: float) -> ProbeResult:
        """Probe as the kubelet does (initial delay, then every period), but at once again
        after a failure until ``budget`` seconds: the run is short, the verdict the same."""
        start = result.started_at
        time.sleep(max(0.0, start + probe.delay - time.monotonic()))
        deadline = time.monotonic() + budget
        detail = ""
        while True:
            if not self.running(result.docker_name):
                code = self.exit_code(result.docker_name)
                return ProbeResult(
                    probe.kind,
                    False,
                    time.monotonic() - start,
                    f"container exited {code}: {self.logs(result.docker_name, 8)}",
                )
            passed, detail = self.probe_once(result, probe)
            if passed:
                return ProbeResult(probe.kind, True, time.monotonic() - start, detail)
            if time.monotonic() >= deadline:
                return ProbeResult(probe.kind, False, time.monotonic() - start, detail)
            time.sleep(min(1.0, probe.period))

    def probe_all(self) -> None:
        """Every long-running container's probes: startup within its own budget
        (failureThreshold x period), readiness and liveness within the pod's startup time,
        in parallel."""

        def one(result: Result) -> None:
            c = result.container
            if c is None or c.init or result.problems or c.pod.workload["kind"] == "Job":
                return
            allowed = result.substitute.probes if result.substitute else None
            for probe in c.probes:
                if allowed is not None and probe.kind not in allowed:
                    result.skipped_probes.append(probe.kind)
                    continue
                budget = probe.failures * probe.period if probe.kind == "startupProbe" else 90.0
                outcome = self.probe_until(result, probe, budget)
                result.probes.append(outcome)
                if not outcome.passed:
                    return
                if probe.kind == "readinessProbe":
                    result.ready_after = outcome.after
            if not c.probes and not self.running(result.docker_name):
                code = self.exit_code(result.docker_name)
                result.problems.append(f"exited {code}: {self.logs(result.docker_name, 8)}")

        with ThreadPoolExecutor(max_workers=max(1, len(self.results))) as pool:
            list(pool.map(one, list(self.results.values())))

    def peak_memory(self, result: Result) -> int | None:
        script = (
            "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null"
            " || cat /sys/fs/cgroup/memory.peak"
        )
        found = docker("exec", result.docker_name, "sh", "-c", script, check=False)
        text = found.stdout.strip()
        return int(text) if text.isdigit() else None

    def stop_gracefully(self, result: Result) -> None:
        """What the kubelet does: the preStop sleep, then SIGTERM, then SIGKILL when the grace
        period (which counts from the start of preStop) is over: ``docker stop`` with what is
        left of it after the sleep."""
        c = result.container
        time.sleep(c.pre_stop)
        started = time.monotonic()
        left = max(1, c.grace - c.pre_stop)
        docker("stop", "-t", str(left), result.docker_name, timeout=120, check=False)
        code = self.exit_code(result.docker_name)
        result.stop = (code if code is not None else -1, time.monotonic() - started)

    # -- down -----------------------------------------------------------------------------------
    def down(self) -> None:
        names = docker("ps", "-aq", "--filter", f"label={LABEL}={self.run}", check=False)
        ids = names.stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, timeout=180, check=False)
        docker("network", "rm", self.network, check=False)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = docker("ps", "-aq", "--filter", f"label={LABEL}={self.run}", check=False).stdout
        found += docker(
            "network", "ls", "-q", "--filter", f"label={LABEL}={self.run}", check=False
        ).stdout
        return found.split()


def http_json(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
            return answer.status, dict(answer.headers), json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        return exc.code, dict(exc.headers), parsed
