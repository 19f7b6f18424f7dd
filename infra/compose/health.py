"""When is a compose stack up: every container judged from ``docker inspect`` and, where a
container has no Docker healthcheck, from its health endpoint asked from this machine.

A container is failing when it exited non-zero, is unhealthy or dead, or keeps restarting:
``MAX_RESTARTS`` restarts since the wait began, healthcheck or not (the collector and Jaeger
have none, so "unhealthy" would never come). One without a healthcheck is up when the
endpoint its ``mesh.demo/health`` label names (``PORT/path`` in the container, published on
this machine) answers 2xx; without such a label, once it has run ``SETTLE`` seconds without
a restart. A one-shot job (restart policy "no") is up once it exited 0.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from infra.compose.project import ComposeProject, Container, last_line, run
from infra.runtime.base import Progress, RuntimeFailure, quiet

MAX_RESTARTS = 3
SETTLE = 5.0
POLL = 1.0
REPEAT = 10.0  # say what is still awaited this often, so a long wait shows it lives
HEALTH_LABEL = "mesh.demo/health"

Probe = Callable[[str], bool]


def probe_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 200 <= answer.status < 300
    except (OSError, ValueError):
        return False


def health_url(c: Container) -> str | None:
    """Where the label's endpoint answers on this machine; None without label or port."""
    label = c.labels.get(HEALTH_LABEL, "").strip()
    if not label:
        return None
    port, _, path = label.partition("/")
    if not port.isdigit():
        return None
    base = c.published(int(port))
    return f"{base}/{path}" if base else None


@dataclass
class Verdict:
    up: bool
    waiting: list[str] = field(default_factory=list)
    failed: list[tuple[Container, str]] = field(default_factory=list)


def judge(
    containers: list[Container],
    first_restarts: Mapping[str, int],
    probe: Probe = probe_http,
    now: float | None = None,
) -> Verdict:
    """One look at the project: up, waiting (for what), or failing (which, and why)."""
    now = time.time() if now is None else now
    waiting: list[str] = []
    failed: list[tuple[Container, str]] = []
    for c in containers:
        if c.oneoff:
            continue
        name = c.compose_service or c.name
        restarts = c.restarts - first_restarts.get(c.id, 0)
        if c.status == "dead":
            failed.append((c, "dead"))
        elif restarts >= MAX_RESTARTS:
            failed.append((c, f"keeps restarting ({restarts} restarts, last exit {c.exit_code})"))
        elif c.status == "exited":
            if c.exit_code != 0:
                failed.append((c, f"exited {c.exit_code}"))
            elif c.restart_policy != "no":
                failed.append((c, "exited 0 but should keep running"))
        elif c.health == "unhealthy":
            failed.append((c, "unhealthy"))
        elif c.status != "running" or c.health == "starting":
            waiting.append(name)
        elif c.health is None:
            url = health_url(c)
            if url is not None:
                if not probe(url):
                    waiting.append(f"{name} ({url})")
            elif c.started_at is None or now - c.started_at < SETTLE:
                waiting.append(name)
    return Verdict(not waiting and not failed, sorted(set(waiting)), failed)


def log_tail(container_id: str, lines: int = 3) -> str:
    done = run(
        ["docker", "logs", "--tail", str(lines), container_id], what="docker logs", check=False
    )
    return last_line(done.stdout + "\n" + done.stderr)


def wait_up(
    project: ComposeProject,
    timeout: float,
    progress: Progress = quiet,
    probe: Probe = probe_http,
) -> float:
    """Until :func:`judge` says up; a failing container ends the wait at once, named with the
    last line it logged. Returns the seconds it took."""
    started = time.monotonic()
    first: dict[str, int] = {}
    said, said_at = "", 0.0
    while True:
        containers = project.containers()
        for c in containers:
            first.setdefault(c.id, c.restarts)
        verdict = judge(containers, first, probe)
        if verdict.failed:
            parts = []
            for c, why in verdict.failed:
                tail = log_tail(c.id)
                parts.append(f"{c.name} {why}" + (f": {tail}" if tail else ""))
            worst = verdict.failed[0][0]
            raise RuntimeFailure(
                "not healthy: "
                + "; ".join(parts)
                + f" (meshctl logs {worst.compose_service or worst.name})"
            )
        if verdict.up and containers:
            return time.monotonic() - started
        line = "waiting for: " + ", ".join(verdict.waiting or ["the containers"])
        if line != said or time.monotonic() - said_at > REPEAT:
            progress(f"{line} ({time.monotonic() - started:.0f}s)")
            said, said_at = line, time.monotonic()
        if time.monotonic() - started > timeout:
            raise RuntimeFailure(f"still not healthy after {timeout:.0f}s: {line[13:]}")
        time.sleep(POLL)
