"""The lessons' judgement and report on made-up measurements: each verdict passes when its
contrast is there and FAILS when it is not (the real lessons, which pass, run in
test_lessons.py), and the report opens with the mistake and ends with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drill_support import Outline

from loadtests.drills.catalog import LessonLimits, LessonProbes
from loadtests.drills.engine import DrillOptions
from loadtests.drills.lesson import lesson_report
from loadtests.drills.lesson_report import write_lesson_report


def half(summary: dict[str, Any], **slos: bool) -> dict[str, Any]:
    """A half's report as run_drill writes it: its summary, and the engine's own SLOs."""
    return {
        "summary": {"orders_accepted": 100, "orders_lost": 0, **summary},
        "slos": [
            {"name": name.replace("_", " "), "threshold": "", "measured": "", "passed": ok}
            for name, ok in slos.items()
        ],
        "timeline": [{"t": float(t), "failures": t % 3, "p99_ms": 20.0 + t} for t in range(30)],
        "operation": {"start": 8.0, "end": 20.0, "events": [{"t": 8.0, "message": "started"}]},
    }


PROBES_WRONG = {
    "rollout_phase": "completed",
    "rollout_failures": 37,
    "rollout_requests": 300,
    "rollout_p99_ms": 3000.0,
    "failed_requests": 37,
    "requests": 600,
}
PROBES_RIGHT = {
    "rollout_phase": "completed",
    "rollout_failures": 0,
    "rollout_requests": 400,
    "rollout_p99_ms": 60.0,
    "failed_requests": 0,
    "requests": 600,
}


def failed(slos: list[Any]) -> list[str]:
    return [s.name for s in slos if not s.passed]


def test_probes_passes_only_on_a_measured_contrast() -> None:
    lesson = LessonProbes(DrillOptions())
    assert failed(lesson.judge(half(PROBES_WRONG), half(PROBES_RIGHT))) == []
    # The right way twice: the contrast is absent and the lesson FAILS on it.
    absent = failed(lesson.judge(half(PROBES_RIGHT), half(PROBES_RIGHT)))
    assert absent == [
        "the wrong way: the mistake shows: requests fail or the p99 is blown during the update"
    ]
    # A p99 blown alone shows the mistake too; requests failing the right way do not pass.
    slow = {**PROBES_RIGHT, "rollout_p99_ms": 2500.0}
    assert failed(lesson.judge(half(slow), half(PROBES_RIGHT))) == []
    assert failed(lesson.judge(half(PROBES_WRONG), half(PROBES_WRONG))) == [
        "the right way: no failed requests"
    ]
    # A half whose operation broke fails the lesson, whatever it measured.
    broken = half(PROBES_WRONG, operation_completed=False)
    assert "the wrong way: operation completed" in failed(lesson.judge(broken, half(PROBES_RIGHT)))
    lost = {**PROBES_RIGHT, "orders_lost": 2}
    assert failed(lesson.judge(half(PROBES_WRONG), half(lost))) == ["the right way: no lost orders"]


LIMITS_WRONG = {
    "peak_rss_mb": 540.0,
    "limit_mb": 128.0,
    "margin_mb": 24.0,
    "oom_kills": 0,
    "restarts": 0,
    "unanswered_requests": 0,
    "failed_requests": 0,
    "ceiling_mb": 512.0,
    "leak_mb_per_s": 30.0,
    "leak_from_s": 10.0,
    "leak_from_mb": 90.0,
    "run_s": 35.0,
    "memory_limit": "none",
}
LIMITS_RIGHT = {
    **LIMITS_WRONG,
    "peak_rss_mb": 140.0,
    "oom_kills": 4,
    "restarts": 4,
    "last_reason": "OOMKilled",
    "failed_requests": 3,
    "memory_limit": "128Mi",
}


def test_limits_passes_only_on_a_measured_contrast() -> None:
    lesson = LessonLimits(DrillOptions())
    assert failed(lesson.judge(half(LIMITS_WRONG), half(LIMITS_RIGHT))) == []
    assert failed(lesson.judge(half(LIMITS_RIGHT), half(LIMITS_RIGHT))) == [
        "the wrong way: the mistake shows: RSS grows past several times the limit it should "
        "have had"
    ]
    # Short of 3 x 128 MiB, it did not show what the lesson teaches.
    short = {**LIMITS_WRONG, "peak_rss_mb": 300.0}
    assert len(failed(lesson.judge(half(short), half(LIMITS_RIGHT)))) == 1
    over = {**LIMITS_RIGHT, "peak_rss_mb": 160.0}
    assert failed(lesson.judge(half(LIMITS_WRONG), half(over))) == [
        "the right way: RSS never above its limit by more than the margin"
    ]
    never = {**LIMITS_RIGHT, "oom_kills": 0, "restarts": 0, "last_reason": "Error"}
    assert failed(lesson.judge(half(LIMITS_WRONG), half(never))) == [
        "the right way: OOM-killed and restarted"
    ]
    hung = {**LIMITS_RIGHT, "unanswered_requests": 2}
    assert failed(lesson.judge(half(LIMITS_WRONG), half(hung))) == [
        "the right way: the requests it held were retried or failed visibly"
    ]


def test_the_lesson_report_opens_with_the_mistake_and_ends_with_the_fix(tmp_path: Path) -> None:
    lesson = LessonLimits(DrillOptions())
    wrong, right = half(LIMITS_WRONG), half(LIMITS_RIGHT)
    for report, mb in ((wrong, 90.0), (right, 100.0)):
        for row in report["timeline"]:
            row["rss_mb"] = {"orders": {"v4" if report is wrong else "v5": mb + row["t"]}}
    # The drill's own samples (four a second) win over the timeline's, where there are any.
    wrong["series"] = {"rss_mb": [[9.0, 95.0], [9.25, 99.5]]}
    slos = lesson.judge(wrong, right)
    report = lesson_report(lesson, "local", {"wrong": wrong, "right": right}, slos, 0.0)
    report["mistake"] = "The <mistake> & its cost"
    html_path = write_lesson_report(report, tmp_path)
    page = html_path.read_text()
    outline = Outline()
    outline.feed(page)
    assert outline.ids[0] == "mistake" and outline.ids[-1] == "fix", outline.ids
    assert outline.svgs == len(report["charts"]) == 4
    assert "The &lt;mistake&gt; &amp; its cost" in page and "<mistake>" not in page
    for chart in report["charts"]:
        png = tmp_path / "charts" / f"{chart['key']}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rss = next(c for c in report["charts"] if c["key"] == "rss")
    assert rss["series"]["wrong"] == [[9.0, 95.0], [9.25, 99.5]]
    assert rss["series"]["right"][0] == [0.0, 100.0]
    assert [round(y) for _, y in rss["projection"]] == [90, 840]  # 30 MiB/s from 10 s to 35 s
    assert {label for label, _ in rss["lines"]} == {
        "limit 128 MiB",
        "3 x limit",
        "drill's ceiling 512 MiB",
    }
    # The fix as a user writes it, from the version file of the right way.
    fixes = "\n".join(f["text"] for f in report["fixes"])
    assert (
        "LIMITS_MEMORY=128Mi" in fixes and "memory: 128Mi" in fixes and "mem_limit: 128m" in fixes
    )
    sides = {row["measure"]: row for row in report["comparison"]}
    assert sides["memory limit"]["wrong"] == "none" and sides["memory limit"]["right"] == "128Mi"
    assert "OOMKilled" in sides["OOM kills / restarts"]["right"]
