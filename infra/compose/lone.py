"""One more replica of a service from another image, beside the compose project (for
lesson-fat-image): ``docker run`` of that image with what a replica of the project has (its
network, its environment, the limits of its version file, the same hardening), so it
registers in Consul and takes its share of the traffic like the others. It carries no compose
labels: meshctl's scale and rollouts never see it, and :meth:`LoneReplica.remove` takes it
away (SIGTERM first: it drains and deregisters as any replica does).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

from infra.compose.fleet import ComposeFleet
from infra.compose.project import APP_PORT, docker, run
from infra.runtime.base import RuntimeFailure

# The container's own, or computed by the entry point: never copied from another replica.
NOT_COPIED = ("HOSTNAME", "ADVERTISE_ADDRESS")
STOP_GRACE = 25  # seconds; SHUTDOWN_GRACE_SECONDS of docker-compose.yml is 20


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).strip())


def installed_packages(image: str) -> int:
    """The Debian packages of an image (``dpkg-query -W``: what ``dpkg -l`` lists as installed)."""
    out = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "dpkg-query", image,
        "-W", "-f", "${Package}\n",
        what=f"dpkg-query in {image}",
    )  # fmt: skip
    return len([line for line in out.splitlines() if line.strip()])


@dataclass
class LoneReplica:
    fleet: ComposeFleet
    service: str
    image: str
    name: str
    container: str = ""
    address: str = ""
    started: float = 0.0  # time.monotonic() just before docker run

    def start(self) -> None:
        """``docker run -d`` of the image, from the first running replica of the service."""
        model = next(
            (c for c in self.fleet.containers_of(self.service) if c.status == "running"), None
        )
        if model is None:
            raise RuntimeFailure(f"no running {self.service} replica to start one beside")
        data = json.loads(docker("inspect", model.id))[0]
        network = next(iter((data.get("NetworkSettings") or {}).get("Networks") or {}), None)
        if network is None:
            raise RuntimeFailure(f"{model.name} is on no network")
        resources = self.fleet.versions.resources(self.service, model.version)
        flags = [
            "--read-only", "--tmpfs", "/tmp:size=64m", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true", "--pids-limit", "256",
            "--label", "mesh.demo/lesson=fat-image", "--network", network,
        ]  # fmt: skip
        for key, flag in (
            ("mem_limit", "--memory"),
            ("mem_reservation", "--memory-reservation"),
            ("cpus", "--cpus"),
            ("cpu_shares", "--cpu-shares"),
        ):
            if key in resources:
                flags += [flag, str(resources[key])]
        env = [
            item
            for item in data["Config"].get("Env") or []
            if str(item).partition("=")[0] not in NOT_COPIED
        ]
        remove_by_name(self.name)
        # Secrets come with the environment (the env files' values): a file only root reads,
        # gone once docker has read it, never on a command line.
        fd, path = tempfile.mkstemp(prefix="mesh-lone-", suffix=".env")
        try:
            with os.fdopen(fd, "w") as out:
                out.write("".join(f"{item}\n" for item in env))
            self.started = time.monotonic()
            self.container = docker(
                "run", "-d", "--name", self.name, "--env-file", path, *flags, self.image,
                what=f"docker run {self.image}",
            ).strip()  # fmt: skip
        finally:
            os.unlink(path)
        ips = json.loads(docker("inspect", self.container))[0]["NetworkSettings"]["Networks"]
        self.address = f"{ips[network]['IPAddress']}:{APP_PORT}"

    def passing(self, version: str) -> bool:
        return self.address in self.fleet.passing_addresses(self.service, version)

    def state(self) -> str:
        done = run(
            ["docker", "inspect", "--format", "{{.State.Status}}", self.container],
            what="docker inspect",
            check=False,
        )
        return done.stdout.strip() or "gone"

    def rss_bytes(self) -> int | None:
        """VmRSS of the container's main process (PID 1: the entry point execs the app)."""
        done = run(
            ["docker", "exec", self.container, "cat", "/proc/1/status"],
            what="docker exec",
            check=False,
            timeout=10,
        )
        for line in done.stdout.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def remove(self) -> None:
        if self.container:
            run(
                ["docker", "stop", "-t", str(STOP_GRACE), self.container],
                what="docker stop",
                check=False,
                timeout=STOP_GRACE + 30,
            )
        remove_by_name(self.name)


def remove_by_name(name: str) -> None:
    run(["docker", "rm", "-f", name], what="docker rm", check=False)
