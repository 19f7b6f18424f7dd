"""The lessons, in their short form, on the local runtime: the real ``meshctl drill`` runs each
lesson's two halves under the real Locust CLI against the real platform (gateway, four
services, tansu, valkey, the development registry: only Consul is not the real thing), and
the lesson passes only when the contrast it teaches was measured.

That a lesson FAILS without its contrast is shown on these same runs: the lesson's own
judgement, given the measured right half as both halves, must fail (the synthetic cases are
in test_lesson_judgement.py). Running a third, fix-in-both-halves lesson for it would add a
minute and a half to CI for the same judgement.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from drill_support import Outline, local_platform, meshctl

from loadtests.drills.catalog import LESSONS
from loadtests.drills.engine import DrillOptions

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from local_platform(tmp_path_factory, "lessons")


def run_lesson(env: dict[str, str], out: Path, name: str, duration: str) -> dict[str, Any]:
    done = meshctl(env, "drill", name, "--duration", duration, "--out", str(out), timeout=280)
    report_file = out / "report.json"
    assert report_file.exists(), f"no report: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_file.read_text())
    failed = [s for s in report["slos"] if not s["passed"]]
    assert done.returncode == 0 and report["passed"], f"{failed}\n{done.stderr[-4000:]}"
    page = Outline()
    page.feed((out / "report.html").read_text())
    assert page.ids[0] == "mistake" and page.ids[-1] == "fix", page.ids
    assert page.svgs == len(report["charts"]) >= 3
    for chart in report["charts"]:
        assert (out / "charts" / f"{chart['key']}.png").read_bytes()[:4] == b"\x89PNG"
        assert chart["series"]["wrong"] and chart["series"]["right"]
    for role in ("wrong", "right"):  # each half is a whole drill report of its own
        assert (out / role / "report.html").exists()
    return report


def half(out: Path, role: str) -> dict[str, Any]:
    return dict(json.loads((out / role / "report.json").read_text()))


def absent_contrast_fails(name: str, out: Path) -> None:
    lesson = LESSONS[name](DrillOptions())
    right = half(out, "right")
    assert all(s.passed for s in lesson.judge(half(out, "wrong"), right))
    slos = lesson.judge(right, right)
    failed = [s.name for s in slos if not s.passed]
    assert failed and all(n.startswith("the wrong way: the mistake shows") for n in failed)


def test_lesson_probes(platform: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "probes"
    report = run_lesson(platform, out, "lesson-probes", "30s")
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert wrong["rollout_failures"] > 0 or wrong["rollout_p99_ms"] > 1000
    assert right["failed_requests"] == 0 and right["requests"] > 300
    assert "readinessProbe" in "".join(f["text"] for f in report["fixes"])
    absent_contrast_fails("lesson-probes", out)


def test_lesson_limits(platform: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "limits"
    report = run_lesson(platform, out, "lesson-limits", "30s")
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert wrong["peak_rss_mb"] >= 3 * right["limit_mb"] and wrong["oom_kills"] == 0
    assert right["peak_rss_mb"] <= right["limit_mb"] + right["margin_mb"]
    assert right["oom_kills"] >= 1 and right["last_reason"] == "OOMKilled"
    # The neighbours' p99 is reported for both runs, measured, not judged.
    assert wrong["neighbours_p99_ms"] > 0 and right["neighbours_p99_ms"] > 0
    absent_contrast_fails("lesson-limits", out)
    # The platform is back where it was: no leaking replica left behind.
    state = json.loads(meshctl(platform, "status", "--json").stdout)
    assert {r["version"] for r in state["replicas"] if r["service"] == "orders"} == {"v1"}


def test_lesson_persistence(platform: dict[str, str], tmp_path: Path) -> None:
    """Last on this platform: its wrong half empties Redis (the orders of the other lessons)."""
    out = tmp_path / "persistence"
    report = run_lesson(platform, out, "lesson-persistence", "20s")
    wrong, right = (report["halves"][r]["summary"] for r in ("wrong", "right"))
    assert (wrong["persistence"], right["persistence"]) == ("off", "everysec")
    assert wrong["orders_lost_outside_window"] > 0
    assert right["orders_lost_outside_window"] == 0 and right["orders_accepted_before_window"] > 0
    assert "appendonly" in "".join(f["text"] for f in report["fixes"])
    absent_contrast_fails("lesson-persistence", out)
    # Redis is back on the persistence it had before the lesson.
    state = json.loads(meshctl(platform, "status", "--json").stdout)
    assert state["infra"]["redis"]["persistence"] == "everysec"
