"""The lessons on the compose runtime: the real ``meshctl drill`` against the session's stack
on a real engine, judged on the same SLOs as on the local runtime (tests/drills/
test_lessons.py). lesson-probes rolls orders to the slow-warming release without a readiness
check (v6: the compose healthcheck and the Consul check see only the port) and then with one
(v7); lesson-limits runs the leaking release beside v1 without a memory limit (v4), then with
the engine's (v5: ``mem_limit``, the kernel's OOM killer); lesson-fat-image builds orders on
the fat and on the slim base and starts both beside the replicas. Short durations; in ORDER
after the drills, before meshctl down."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from compose_support import ROOT
from conftest import MESHCTL, MeshctlStack

from infra.compose import images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(330),
    pytest.mark.skipif(
        os.environ.get("MESH_COMPOSE_STACK") != "1",
        reason="needs a Docker engine and the images: run `make test-compose`",
    ),
]


def lesson(stack: MeshctlStack, out: Path, name: str, duration: str) -> dict[str, Any]:
    done = subprocess.run(
        [*MESHCTL, "drill", name, "--duration", duration, "--out", str(out)],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=320,
        check=False,
    )
    report_file = out / "report.json"
    assert report_file.exists(), f"no report: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_file.read_text())
    failed = [s for s in report["slos"] if not s["passed"]]
    assert done.returncode == 0 and report["passed"], f"{failed}\n{done.stderr[-4000:]}"
    assert report["runtime"] == "compose"
    html = (out / "report.html").read_text()
    assert html.index('id="mistake"') < html.index('id="fix"')
    for chart in report["charts"]:
        assert chart["series"]["wrong"] and chart["series"]["right"], chart["key"]
        assert (out / "charts" / f"{chart['key']}.png").read_bytes()[:4] == b"\x89PNG"
    figures = os.environ.get("MESH_DRILL_FIGURES")
    if figures:  # beside the drills' figures (tests/drills/drill_support.py: record)
        halves = {r: report["halves"][r]["summary"] for r in ("wrong", "right")}
        with open(figures, "a") as fh:
            fh.write(json.dumps({"runtime": "compose", "lesson": name, **halves}) + "\n")
    print(f"\n{name}: " + json.dumps({r: report["halves"][r]["summary"] for r in report["halves"]}))
    return report


def test_lesson_probes(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = lesson(meshctl_stack, tmp_path / "probes", "lesson-probes", "32s")
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert wrong["rollout_failures"] > 0 or wrong["rollout_p99_ms"] > 1000
    assert right["failed_requests"] == 0 and right["requests"] > 300
    # Back on the compose file's version, no lesson container or override left.
    orders = meshctl_stack.runtime.status().service("orders")
    assert orders is not None and orders.stable == "v1"
    assert meshctl_stack.project.container_ids("orders-v6") == []
    assert meshctl_stack.project.container_ids("orders-v7") == []


def test_lesson_limits(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = lesson(meshctl_stack, tmp_path / "limits", "lesson-limits", "36s")
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    # Without a limit the leak ran to the drill's ceiling; with one the kernel killed the
    # container at its mem_limit, and the engine restarted it (State.OOMKilled).
    assert wrong["memory_limit"] == "none" and wrong["oom_kills"] == 0
    assert wrong["peak_rss_mb"] >= 3 * right["limit_mb"]
    assert right["memory_limit"] == "128Mi" and right["last_reason"] == "OOMKilled"
    # RSS counts shared library pages the kernel charged to another cgroup: the margin.
    assert right["oom_kills"] >= 1
    assert right["peak_rss_mb"] <= right["limit_mb"] + right["margin_mb"]
    assert wrong["orders_lost"] == 0 and right["orders_lost"] == 0
    # The lesson's containers are gone: orders is back on v1 alone.
    assert meshctl_stack.project.container_ids("orders-v4") == []
    assert meshctl_stack.project.container_ids("orders-v5") == []


def test_lesson_fat_image(meshctl_stack: MeshctlStack, tmp_path: Path) -> None:
    report = lesson(meshctl_stack, tmp_path / "fat", "lesson-fat-image", "25s")
    fat, slim = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert fat["final_base"] == images.LOCAL_FAT_BASE and slim["final_base"] == images.LOCAL_BASE
    assert fat["image_mb"] > 1.5 * slim["image_mb"] and fat["packages"] > slim["packages"] + 50
    assert fat["ready_s"] > 0 and slim["ready_s"] > 0 and fat["rss_mb"] > 0
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=mesh.demo/lesson=fat-image",
         "--filter", f"name={meshctl_stack.project.name}-lesson-"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert left == [], "the lesson's containers are removed"
