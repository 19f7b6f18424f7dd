"""The drills on the compose runtime: the real ``meshctl drill`` (the real Locust CLI on the
host) against the session's stack on a real engine, each judged on the same SLOs as on the
local runtime (``tests/drills/test_drills.py``; the same helper checks the report). The
stand-ins are what runs here: tansu, Debian's redis-server, the development registry.

Short durations, the local tests' own, so the figures compare; one stack for all of them, in
the order a user would rehearse them (each drill brings the platform to its own start).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import MeshctlStack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "drills"))
from drill_support import run_drill, slo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(330),
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]
DRILL_TIMEOUT = 300.0


def drill(stack: MeshctlStack, tmp_path: Path, name: str, duration: str) -> dict:
    report = run_drill(stack.env, tmp_path, name, duration, timeout=DRILL_TIMEOUT)
    assert report["runtime"] == "compose"
    return report


def test_rolling(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = drill(meshctl_stack, tmp_path, "rolling", "30s")
    assert slo(report, "no failed requests")["measured"].startswith("0 of ")
    assert report["summary"]["requests"] > 300


def test_bluegreen(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = drill(meshctl_stack, tmp_path, "bluegreen", "30s")
    weights = [row["weights"].get("orders") for row in report["timeline"]]
    assert any(w and 0 in w.values() for w in weights), "the switch is visible in the weights"


def test_canary_bad(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = drill(meshctl_stack, tmp_path, "canary-bad", "30s")
    assert slo(report, "rolled back automatically")["measured"] == "aborted"
    # The bad version's containers are gone with the rollback.
    assert meshctl_stack.project.container_ids("orders-v3") == []


def test_kill_replica(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = drill(meshctl_stack, tmp_path, "kill-replica", "30s")
    assert report["summary"]["orders_accepted"] > 50
    assert report["summary"]["orders_lost"] == 0


def test_broker_restart(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = drill(meshctl_stack, tmp_path, "broker-restart", "30s")
    assert report["summary"]["orders_lost"] == 0
    messages = [e["message"] for e in report["operation"]["events"]]
    assert "kafka stopped" in messages and "kafka answering again" in messages


def test_autoscale(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    """The local runtime's HPA loop, in the compose autoscaler's process: the spike makes it
    add orders replicas, and every decision is in its log, in the local format."""
    report = drill(meshctl_stack, tmp_path, "autoscale", "60s")
    replicas = [sum(row["replicas"].get("orders", {}).values()) for row in report["timeline"]]
    assert min(replicas) == 1 and max(replicas) > 1
    state = meshctl_stack.runtime.autoscale(None)
    assert not state.enabled, "the drill turns the autoscaler off again"
    assert state.log is not None
    decisions = [json.loads(line) for line in Path(state.log).read_text().splitlines()]
    ups = [d for d in decisions if d["service"] == "orders" and d["desired"] > d["current"]]
    assert ups, "no scale-up decision of orders in the log"
    assert ups[0]["reason"].startswith("scale up") and ups[0]["metrics"][0]["name"] == "in_flight"


# -- Redis persistence (issue 21): last, since the runs without persistence (and without the
# volume) forget the shop's state; each one puts Redis back as it was.
def redis_persistence(stack: MeshctlStack) -> str:
    status = stack.meshctl("status", "--json")
    return str(json.loads(status.stdout)["infra"]["redis"]["persistence"])


def test_redis_crash(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    """SIGKILL of the Redis container under load (the stack's own everysec on its named
    volume): the same SLOs as on the local runtime, and nothing lost (a killed process loses
    nothing the kernel has; the fsync window is what a crash of the machine could lose)."""
    assert redis_persistence(meshctl_stack) == "everysec"
    table = meshctl_stack.meshctl("status").stdout
    volume = f"volume {meshctl_stack.project.name}_redis-data"
    assert f"append-only file in {volume}, fsync everysec" in table, table
    before = meshctl_stack.project.container_ids("redis")
    report = drill(meshctl_stack, tmp_path, "redis-crash", "20s")
    summary = report["summary"]
    assert summary["persistence"] == "everysec" and summary["orders_accepted"] > 30
    assert summary["orders_lost"] == 0 and report["lost"] == []
    messages = [e["message"] for e in report["operation"]["events"]]
    assert "redis killed with SIGKILL (persistence everysec)" in messages
    assert "redis answering again at the same address" in messages
    # The same container started again: same name, command and volume.
    assert meshctl_stack.project.container_ids("redis") == before


def test_redis_crash_without_persistence_fails(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    out = tmp_path / "redis-crash-off"
    done = meshctl_stack.meshctl(
        "drill", "redis-crash", "--duration", "20s", "--persistence", "off", "--out", str(out),
        timeout=DRILL_TIMEOUT,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert done.returncode == 3 and not report["passed"], done.stderr[-3000:]
    verdicts = {s["name"]: s["passed"] for s in report["slos"]}
    assert verdicts == {
        "no order lost from before the fsync window (off)": False,
        "the shop accepts orders again by itself": True,
        "orders accepted after the restart all reach a final state": True,
        "no replica restarted": True,
    }, report["slos"]
    lost = report["lost"]
    assert len(lost) == report["summary"]["orders_lost"] > 0
    assert {row["why"] for row in lost} == {
        "gone: the gateway answers 404 (no such order any more)"
    }
    assert redis_persistence(meshctl_stack) == "everysec", "the drill switched it back"


@pytest.mark.timeout(900)
def test_lesson_persistence(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    """The crash with persistence off, then everysec; then `down` and `up` without the named
    volume (Redis's /data on an anonymous volume, by an override) and with it."""
    out = tmp_path / "lesson-persistence"
    done = meshctl_stack.meshctl(
        "drill", "lesson-persistence", "--duration", "20s", "--out", str(out), timeout=840
    )
    assert (out / "report.json").exists(), f"no report: {done.stderr[-4000:]}"
    report = json.loads((out / "report.json").read_text())
    failed = [s for s in report["slos"] if not s["passed"]]
    assert done.returncode == 0 and report["passed"], f"{failed}\n{done.stderr[-4000:]}"
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert (wrong["persistence"], right["persistence"]) == ("off", "everysec")
    assert wrong["orders_lost_outside_window"] > 0 and right["orders_lost"] == 0
    (volume,) = report["contrasts"]
    rows = {r["measure"]: r for r in volume["rows"]}
    assert rows["orders kept"]["wrong"] == "0 of 20" and rows["orders kept"]["right"] == "20 of 20"
    before, after = rows["payments kept"]["right"].split(" -> ")
    assert before == after != "0", rows["payments kept"]
    assert rows["payments kept"]["wrong"].endswith("-> 0"), rows["payments kept"]
    page = (out / "report.html").read_text()
    assert '<section id="contrast-volume">' in page and "redis-data:/data" in page
    # The stack is as before: Redis on its named volume, everysec, no anonymous volume left.
    redis = meshctl_stack.runtime.status().infra["redis"]
    assert redis["persistence"] == "everysec"
    assert redis["data"] == f"volume {meshctl_stack.project.name}_redis-data"
    assert not (
        meshctl_stack.home / "compose" / meshctl_stack.project.name / "infra-override.yml"
    ).exists()
