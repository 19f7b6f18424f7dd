"""The mesh console against the compose runtime: ``meshctl console`` on the session's stack
(real engine, real containers), read through the same runtime interface as on local. The
page itself is tested in Chromium on the local runtime (tests/console); here: the console
starts, its frames name every service with its versions and the topics with their consumer
groups, ``meshctl status --json`` shows its URL while it runs, and ``--stop`` ends it."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import pytest
from compose_support import free_port, wait_for
from conftest import MeshctlStack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]
SERVICES = ("orders", "inventory", "payments", "notifications")


def frame(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/frame", timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_the_console_reads_the_compose_stack(meshctl_stack: MeshctlStack) -> None:
    port = free_port()
    started = meshctl_stack.meshctl("console", "--port", str(port), timeout=90)
    assert started.returncode == 0, started.stderr[-2000:]
    url = f"http://127.0.0.1:{port}"
    assert url in started.stdout, started.stdout
    try:

        def complete() -> dict[str, Any] | None:
            got = frame(url)
            if got is None or got.get("runtime") != "compose":
                return None
            names = {s["name"]: s for s in got["services"]}
            if not all(names.get(n, {}).get("versions") for n in SERVICES):
                return None
            if not any(t["groups"] for t in got["topics"]):
                return None
            return got

        seen = wait_for(complete, timeout=90, interval=1.0, what="a frame of the compose stack")
        assert seen["gateway"] is not None, "the gateway is in the frame"
        status = json.loads(meshctl_stack.meshctl("status", "--json").stdout)
        assert status["console"]["url"] == url
    finally:
        stopped = meshctl_stack.meshctl("console", "--stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert frame(url) is None, "the console still answers after --stop"
    status = json.loads(meshctl_stack.meshctl("status", "--json").stdout)
    assert "console" not in status
