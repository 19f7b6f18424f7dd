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
    report = drill(meshctl_stack, tmp_path, "autoscale", "40s")
    replicas = [sum(row["replicas"].get("orders", {}).values()) for row in report["timeline"]]
    assert min(replicas) == 1 and max(replicas) > 1
    state = meshctl_stack.runtime.autoscale(None)
    assert not state.enabled, "the drill turns the autoscaler off again"
    assert state.log is not None
    decisions = [json.loads(line) for line in Path(state.log).read_text().splitlines()]
    ups = [d for d in decisions if d["service"] == "orders" and d["desired"] > d["current"]]
    assert ups, "no scale-up decision of orders in the log"
    assert ups[0]["reason"].startswith("scale up") and ups[0]["metrics"][0]["name"] == "in_flight"
