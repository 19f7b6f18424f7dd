"""meshctl's wait for a compose stack (``infra/compose/health.py``).

Without an engine: the verdict on containers as ``docker inspect`` describes them. On the
real engine (``make test-compose``), two tiny projects from the local base image: a container
with no healthcheck that crashes at start (as the collector or Jaeger do on a bad config) must
end the wait at once, named with the line it logged; a container with no healthcheck whose
health endpoint answers only after a while must be waited for. The old wait (an exited
non-zero or unhealthy container only) saw neither: the crash loop passed as up.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compose_support import free_port

from infra.compose.health import MAX_RESTARTS, judge, wait_up
from infra.compose.images import LOCAL_BASE
from infra.compose.project import ComposeProject, Container
from infra.runtime.base import RuntimeFailure

NOW = 1_000_000.0
on_engine = pytest.mark.skipif(
    os.environ.get("MESH_COMPOSE_STACK") != "1",
    reason="needs a Docker engine and the local base image: run `make test-compose`",
)


def container(
    name: str,
    status: str = "running",
    *,
    health: str | None = None,
    exit_code: int = 0,
    restarts: int = 0,
    policy: str = "unless-stopped",
    started: float = NOW - 60,
    labels: dict[str, str] | None = None,
    ports: dict[str, Any] | None = None,
) -> Container:
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(started))
    state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "StartedAt": started_at}
    if health:
        state["Health"] = {"Status": health}
    return Container.from_inspect(
        {
            "Id": f"id-{name}",
            "Name": f"/p-{name}-1",
            "RestartCount": restarts,
            "Config": {"Labels": {"com.docker.compose.service": name, **(labels or {})}},
            "State": state,
            "HostConfig": {"RestartPolicy": {"Name": policy}},
            "NetworkSettings": {"Ports": ports or {}},
        }
    )


def test_verdicts_of_the_wait() -> None:
    healthy = container("orders", health="healthy")
    job = container("kafka-init", "exited", policy="no")
    assert judge([healthy, job], {}, now=NOW).up

    looping = container("collector", "restarting", exit_code=1, restarts=MAX_RESTARTS)
    verdict = judge([healthy, looping], {}, now=NOW)
    assert [(c.compose_service, why) for c, why in verdict.failed] == [
        ("collector", f"keeps restarting ({MAX_RESTARTS} restarts, last exit 1)")
    ]
    # Restarts count from the start of the wait: an old container's history is not a loop.
    assert judge([looping], {looping.id: MAX_RESTARTS}, now=NOW).waiting == ["collector"]
    # Running again between two crashes, with no healthcheck: still a loop.
    between = container("jaeger", restarts=MAX_RESTARTS + 1, started=NOW - 0.2)
    assert judge([between], {}, now=NOW).failed

    failed_job = container("kafka-init", "exited", exit_code=1, policy="no")
    assert judge([failed_job], {}, now=NOW).failed
    assert judge([container("redis", health="unhealthy")], {}, now=NOW).failed
    assert judge([container("orders", health="starting")], {}, now=NOW).waiting == ["orders"]
    # No healthcheck, no endpoint: up once it ran a few seconds without a restart.
    assert judge([container("x", started=NOW - 1)], {}, now=NOW).waiting == ["x"]
    assert judge([container("x", started=NOW - 30)], {}, now=NOW).up


def test_a_health_label_is_asked_where_the_port_is_published() -> None:
    probed: list[str] = []
    labelled = container(
        "jaeger",
        labels={"mesh.demo/health": "13133/status"},
        ports={"13133/tcp": [{"HostIp": "127.0.0.1", "HostPort": "23133"}]},
    )

    def probe(url: str) -> bool:
        probed.append(url)
        return False

    verdict = judge([labelled], {}, probe, now=NOW)
    assert probed == ["http://127.0.0.1:23133/status"]
    assert verdict.waiting == ["jaeger (http://127.0.0.1:23133/status)"]
    assert judge([labelled], {}, lambda url: True, now=NOW).up


# -- on the engine ------------------------------------------------------------------------------
def project_of(tmp_path: Path, name: str, body: str) -> ComposeProject:
    path = tmp_path / "compose.yml"
    path.write_text(body.replace("BASE", LOCAL_BASE))
    return ComposeProject(name, (path,), tmp_path, tmp_path / "state", {})


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[list[ComposeProject]]:
    made: list[ComposeProject] = []
    yield made
    for project in made:
        project.compose("down", "-v", "--remove-orphans", "-t", "1", check=False)


@on_engine
def test_a_crash_loop_without_healthcheck_ends_the_wait(
    tmp_path: Path, tiny: list[ComposeProject]
) -> None:
    project = project_of(
        tmp_path,
        "meshtestwaitloop",
        """
services:
  steady:
    image: BASE
    command: ["python3", "-c", "import time; time.sleep(600)"]
    stop_grace_period: 1s
    restart: unless-stopped
  crasher:
    image: BASE
    command: ["python3", "-c", "import sys; print('crasher: bad setting FOO=1'); sys.exit(3)"]
    restart: unless-stopped
""",
    )
    tiny.append(project)
    project.compose("up", "-d")
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as failure:
        wait_up(project, timeout=90)
    took = time.monotonic() - started
    message = str(failure.value)
    assert "crasher" in message and "keeps restarting" in message, message
    assert "bad setting FOO=1" in message, "the last line it logged"
    assert "steady" not in message
    assert took < 30, f"the crash loop was seen after {took:.0f}s"


@on_engine
def test_no_healthcheck_waits_for_the_health_endpoint(
    tmp_path: Path, tiny: list[ComposeProject]
) -> None:
    port = free_port()
    project = project_of(
        tmp_path,
        "meshtestwaitprobe",
        f"""
services:
  slow:
    image: BASE
    # Answers only after 5 s, like a collector still loading its pipelines.
    command:
      - python3
      - -c
      - >-
        import time, http.server as h; time.sleep(5);
        h.test(h.SimpleHTTPRequestHandler, port=8000, bind='0.0.0.0')
    stop_grace_period: 1s
    labels:
      mesh.demo/health: "8000/"
    ports:
      - "127.0.0.1:{port}:8000"
""",
    )
    tiny.append(project)
    project.compose("up", "-d")
    started = time.monotonic()
    wait_up(project, timeout=60)
    took = time.monotonic() - started
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as answer:
        assert answer.status == 200, "the wait returned before the endpoint answered"
    assert took >= 3, f"returned after {took:.1f}s: it cannot have waited for the endpoint"
