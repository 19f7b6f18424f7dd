"""A pod spec, as the kubelet would run it, translated into ``docker run`` arguments.

What the kubelet does and this reproduces on a Docker engine:

- the pod's sandbox: one container holding the network namespace (and, with
  ``shareProcessNamespace``, the PID namespace, its process PID 1) that every container of
  the pod joins; the pod's hostname; the DNS names of the Services selecting it (network
  aliases: ``svc``, ``svc.mesh.svc``, a StatefulSet pod's ``pod.headless.mesh.svc``);
- ``command`` replaces the image's ENTRYPOINT and drops its CMD, ``args`` replace CMD;
  ``$(VAR)`` in env, command and args expands to a variable defined before it (``$$`` is a
  ``$``), an undefined one stays as written;
- the environment: ``envFrom`` ConfigMaps, then ``env`` in order, with ConfigMap and Secret
  keys resolved and the downward API (``metadata.name``, ``metadata.labels['...']``,
  ``status.podIP``...);
- ``runAsUser``/``runAsGroup`` (the container's over the pod's), ``fsGroup`` and
  ``supplementalGroups`` as supplementary groups, ``runAsNonRoot`` refused for uid 0 or a
  non-numeric image user (the kubelet cannot verify it), ``readOnlyRootFilesystem``, dropped
  and added capabilities, ``allowPrivilegeEscalation: false`` as no-new-privileges;
- volumes: ``emptyDir`` a fresh directory of mode 0777 as the kubelet makes it (group
  ``fsGroup`` and setgid when the pod has one), ``configMap``/``secret`` their keys as files
  (0644) mounted read-only, a volume claim a fresh directory too (kind's local-path
  provisioner makes them 0777). Bind mounts, not tmpfs: Docker gives a tmpfs over a directory
  of the image that directory's mode, which the kubelet never does;
- ``limits`` as the memory and CPU limits.

Pure functions: nothing here talks to Docker (``stack.py`` does), so ``make test`` checks the
translation itself.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
NAMESPACE = "mesh"
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class Unsupported(Exception):
    """A pod spec feature this emulation does not reproduce (said, never silently dropped)."""


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined[name] if name in defined else match.group(0)

    return _VAR.sub(one, value)


def quantity_bytes(value: str | int) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}
    text = str(value)
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def quantity_cpus(value: str | int) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def find(objs: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)


@dataclass
class Pod:
    """One pod of a workload, with what the API server and the kubelet would give it."""

    workload: Obj
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: Obj
    aliases: list[str]
    service_account: str | None = None

    @property
    def ident(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}"


@dataclass
class Probe:
    kind: str  # startupProbe, readinessProbe, livenessProbe
    spec: Obj

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failures(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def delay(self) -> float:
        return float(self.spec.get("initialDelaySeconds", 0))


@dataclass
class Container:
    pod: Pod
    name: str
    init: bool
    image: str
    entrypoint: list[str] | None  # None: the image's own
    cmd: list[str] | None  # None: the image's own
    env: dict[str, str]
    user: str | None
    groups: list[int]
    run_as_non_root: bool
    read_only: bool
    cap_drop: list[str]
    cap_add: list[str]
    no_new_privileges: bool
    scratch: dict[str, tuple[int, int | None]]  # mount path -> (mode, group) of a fresh dir
    files: dict[str, dict[str, str]]  # mount path -> {file name: content}, read-only binds
    memory: int | None
    cpus: float | None
    ports: dict[str, int]
    probes: list[Probe] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # files the env and args name
    grace: int = 30
    pre_stop: int = 0  # seconds of a preStop sleep, which the grace period includes

    @property
    def ident(self) -> str:
        return f"{self.pod.ident} {'init ' if self.init else ''}container {self.name}"

    def port(self, value: str | int) -> int:
        if isinstance(value, int) or str(value).isdigit():
            return int(value)
        if value not in self.ports:
            raise Unsupported(f"{self.ident}: probe port {value!r} is no named container port")
        return self.ports[value]


def pod_for(objs: list[Obj], workload: Obj) -> Pod:
    """The first pod of a workload: ``<statefulset>-0``, ``<deployment>-pod``."""
    kind = workload["kind"]
    template = workload["spec"]["template"]
    meta = template.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    name = workload["metadata"]["name"]
    pod_name = f"{name}-0" if kind == "StatefulSet" else f"{name}-pod"
    if kind == "StatefulSet":
        labels["apps.kubernetes.io/pod-index"] = "0"
        labels["statefulset.kubernetes.io/pod-name"] = pod_name
    aliases: list[str] = []
    for svc in (o for o in objs if o["kind"] == "Service"):
        selector = svc["spec"].get("selector") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        svc_name = svc["metadata"]["name"]
        aliases += [
            svc_name,
            f"{svc_name}.{NAMESPACE}.svc",
            f"{svc_name}.{NAMESPACE}.svc.cluster.local",
        ]
        if svc["spec"].get("clusterIP") == "None" and kind == "StatefulSet":
            aliases.append(f"{pod_name}.{svc_name}.{NAMESPACE}.svc")
    return Pod(
        workload,
        pod_name,
        labels,
        dict(meta.get("annotations") or {}),
        template["spec"],
        aliases,
        template["spec"].get("serviceAccountName"),
    )


def service_port_problems(objs: list[Obj], pod: Pod) -> list[str]:
    """A Service port that differs from its target port needs a proxy Docker has not got."""
    problems = []
    ports = {
        p.get("name"): p["containerPort"]
        for c in pod.spec.get("containers") or []
        for p in c.get("ports") or []
    }
    for svc in (o for o in objs if o["kind"] == "Service"):
        if svc["metadata"]["name"] not in pod.aliases:
            continue
        for p in svc["spec"].get("ports") or []:
            target = p.get("targetPort", p["port"])
            number = ports.get(target, target) if isinstance(target, str) else target
            if number != p["port"]:
                problems.append(
                    f"Service {svc['metadata']['name']} maps port {p['port']} to {number}: "
                    "on Docker the name reaches the pod's own port"
                )
    return problems


def _config(objs: list[Obj], kind: str, name: str) -> dict[str, str]:
    obj = find(objs, kind, name)
    if obj is None:
        raise Unsupported(f"{kind} {name} is not in the build")
    data = dict(obj.get("data") or {})
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        data.update(obj.get("stringData") or {})
    return data


def _field(pod: Pod, path: str, pod_ip: str) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": NAMESPACE,
        "status.podIP": pod_ip,
        "status.hostIP": pod_ip,
        "spec.nodeName": "docker",
        "spec.serviceAccountName": pod.service_account or "default",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        source = pod.labels if match.group(1) == "labels" else pod.annotations
        if match.group(2) in source:
            return source[match.group(2)]
    raise Unsupported(f"pod {pod.name}: fieldRef {path} has no value")


def environment(objs: list[Obj], pod: Pod, c: Obj, pod_ip: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for env_from in c.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in env_from:
                data = _config(objs, kind, env_from[key]["name"])
                env.update({env_from.get("prefix", "") + k: v for k, v in data.items()})
    for item in c.get("env") or []:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = expand(str(item.get("value", "")), env)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = _config(objs, "ConfigMap", ref["name"])[ref["key"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = _config(objs, "Secret", ref["name"])[ref["key"]]
        elif "fieldRef" in source:
            env[item["name"]] = _field(pod, source["fieldRef"]["fieldPath"], pod_ip)
        else:
            raise Unsupported(f"pod {pod.name}: env {item['name']} from {sorted(source)}")
    return env


def _mounts(
    objs: list[Obj], pod: Pod, c: Obj, where: str
) -> tuple[dict[str, tuple[int, int | None]], dict[str, dict[str, str]]]:
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    claims = {
        t["metadata"]["name"]: t for t in pod.workload["spec"].get("volumeClaimTemplates") or []
    }
    fs_group = (pod.spec.get("securityContext") or {}).get("fsGroup")
    scratch: dict[str, tuple[int, int | None]] = {}
    files: dict[str, dict[str, str]] = {}
    # The kubelet's SetVolumeOwnership: group fsGroup, setgid, group-writable.
    writable = (0o2777, fs_group) if fs_group is not None else (0o777, None)
    for mount in c.get("volumeMounts") or []:
        path, name = mount["mountPath"], mount["name"]
        if mount.get("subPath"):
            raise Unsupported(f"{where}: subPath mounts are not emulated")
        volume = volumes.get(name)
        if volume is None and name in claims:
            scratch[path] = writable
        elif volume is None:
            raise Unsupported(f"{where}: volume {name} is not in the pod spec")
        elif "emptyDir" in volume:
            if (volume["emptyDir"] or {}).get("medium") == "Memory":
                raise Unsupported(f"{where}: a Memory emptyDir is not emulated")
            scratch[path] = writable
        elif "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            source = volume.get("configMap") or volume.get("secret") or {}
            data = _config(objs, kind, source.get("name") or source.get("secretName", ""))
            items = source.get("items")
            files[path] = {i["path"]: data[i["key"]] for i in items} if items else data
        else:
            raise Unsupported(f"{where}: volume {name} of type {sorted(set(volume) - {'name'})}")
    return scratch, files


def named_paths(env: dict[str, str], argv: list[str]) -> list[str]:
    """Absolute paths a container's settings name: env values, and args that are a path or
    ``--flag=/path``. Lists (``a,b``) and URLs are not paths."""
    out: list[str] = []
    for value in [*env.values(), *argv]:
        value = value.split("=", 1)[1] if value.startswith("-") and "=" in value else value
        if re.fullmatch(r"/[\w./-]+", value):
            out.append(value)
    return list(dict.fromkeys(out))


def container_plan(objs: list[Obj], pod: Pod, c: Obj, init: bool, pod_ip: str) -> Container:
    where = f"{pod.ident} container {c['name']}"
    pod_sc = pod.spec.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        raise Unsupported(f"{where}: privileged")
    env = environment(objs, pod, c, pod_ip)
    command = [expand(str(x), env) for x in c.get("command") or []]
    args = [expand(str(x), env) for x in c.get("args") or []]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    if command:
        entrypoint, cmd = command[:1], [*command[1:], *args]
    elif "args" in c:
        cmd = args
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    user = None if uid is None else (f"{uid}:{gid}" if gid is not None else str(uid))
    groups = [
        *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []),
        *pod_sc.get("supplementalGroups", []),
    ]
    caps = sc.get("capabilities") or {}
    scratch, files = _mounts(objs, pod, c, where)
    limits = (c.get("resources") or {}).get("limits") or {}
    probes = [
        Probe(k, c[k]) for k in ("startupProbe", "readinessProbe", "livenessProbe") if c.get(k)
    ]
    return Container(
        pod=pod,
        name=c["name"],
        init=init,
        image=c["image"],
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        user=user,
        groups=groups,
        run_as_non_root=bool(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))),
        read_only=bool(sc.get("readOnlyRootFilesystem", False)),
        cap_drop=list(caps.get("drop") or []),
        cap_add=list(caps.get("add") or []),
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        scratch=scratch,
        files=files,
        memory=quantity_bytes(limits["memory"]) if "memory" in limits else None,
        cpus=quantity_cpus(limits["cpu"]) if "cpu" in limits else None,
        ports={
            p.get("name") or str(p["containerPort"]): p["containerPort"]
            for p in c.get("ports") or []
        },
        probes=probes,
        paths=named_paths(env, [*command, *args]),
        grace=int(pod.spec.get("terminationGracePeriodSeconds", 30)),
        pre_stop=int(
            ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
        ),
    )


def non_root_problem(container: Container, image_user: str) -> str | None:
    """What the kubelet says when runAsNonRoot cannot hold (the container is not started)."""
    if not container.run_as_non_root:
        return None
    uid = container.user.split(":")[0] if container.user else image_user.split(":")[0]
    if uid == "" or uid == "0" or uid == "root":
        return f"{container.ident}: container has runAsNonRoot and image will run as root"
    if not uid.isdigit():
        return (
            f"{container.ident}: container has runAsNonRoot and image has non-numeric user "
            f"({uid}), cannot verify user is non-root"
        )
    return None


def mount_args(container: Container, dirs: dict[str, str]) -> list[str]:
    """``-v`` for each volume (``dirs``: mount path -> the host directory made for it)."""
    argv = []
    for path, host in sorted(dirs.items()):
        mode = "ro" if path in container.files else "rw"
        argv += ["-v", f"{host}:{path}:{mode}"]
    return argv


def run_argv(
    container: Container, name: str, sandbox: str, share_pid: bool, dirs: dict[str, str]
) -> list[str]:
    """``docker run`` for one container of the pod (``dirs``: mount path -> the host
    directory of its volume: ConfigMap or Secret files, or a fresh writable directory)."""
    argv = ["docker", "run", "--name", name, "--network", f"container:{sandbox}"]
    if share_pid:
        argv += ["--pid", f"container:{sandbox}"]
    if container.user:
        argv += ["--user", container.user]
    for group in container.groups:
        argv += ["--group-add", str(group)]
    if container.read_only:
        argv.append("--read-only")
    for cap in container.cap_drop:
        argv += ["--cap-drop", cap]
    for cap in container.cap_add:
        argv += ["--cap-add", cap]
    if container.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    argv += mount_args(container, dirs)
    if container.memory:
        argv += ["--memory", str(container.memory), "--memory-swap", str(container.memory)]
    if container.cpus:
        argv += ["--cpus", f"{container.cpus:g}"]
    for key, value in container.env.items():
        argv += ["-e", f"{key}={value}"]
    if container.entrypoint is not None:
        argv += ["--entrypoint", container.entrypoint[0]]
    argv.append(container.image)
    if container.cmd is not None:
        argv += container.cmd
    return argv
