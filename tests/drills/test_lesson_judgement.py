"""The lessons' judgement and report on made-up measurements: each verdict passes when its
contrast is there and FAILS when it is not (the real lessons, which pass, run in
test_lessons.py), and the report opens with the mistake and ends with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drill_support import Outline

from loadtests.drills.catalog import LessonFatImage, LessonLimits, LessonProbes
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


def test_a_contrast_after_the_runs_is_a_table_of_its_own(tmp_path: Path) -> None:
    """lesson-persistence on compose: `down` then `up` without and with the named volume,
    beside the two runs, before the charts; the fix stays last."""
    from dataclasses import asdict

    from loadtests.drills.catalog import LessonPersistence
    from loadtests.drills.engine import SLO
    from loadtests.drills.lesson import Contrast

    lesson = LessonPersistence(DrillOptions())
    wrong, right = half({"redis_crashed": 1}), half({"redis_crashed": 1})
    report = lesson_report(lesson, "compose", {"wrong": wrong, "right": right}, [], 0.0)
    contrast = Contrast(
        key="volume",
        title="down, then up",
        caption="without <a> volume",
        columns=("without the named volume", "with the named volume"),
        rows=[{"measure": "orders kept", "how": "found", "wrong": "0 of 20", "right": "20 of 20"}],
        slos=[SLO("kept", "20", "20", True)],
        events=["down then up without the named volume"],
    )
    report["contrasts"] = [asdict(contrast)]
    page = write_lesson_report(report, tmp_path).read_text()
    outline = Outline()
    outline.feed(page)
    assert outline.ids.index("side-by-side") < outline.ids.index("contrast-volume")
    assert outline.ids[-1] == "fix"
    assert "without &lt;a&gt; volume" in page and "20 of 20" in page
    assert "redis-data:/data" in page  # the volume lines as the user writes them


FAT = {"variant": "fat", "image_mb": 690.0, "packages": 402, "ready_s": 4.1, "build_s": 9.0}
SLIM = {"variant": "slim", "image_mb": 230.0, "packages": 110, "ready_s": 3.9, "build_s": 6.0}


def test_fat_image_passes_only_on_a_measured_contrast(tmp_path: Path) -> None:
    lesson = LessonFatImage(DrillOptions())
    assert failed(lesson.judge(half(FAT), half(SLIM))) == []
    # The slim image in both halves: no contrast, the lesson FAILS (meshctl exits 3).
    assert failed(lesson.judge(half({**SLIM, "variant": "fat"}), half(SLIM))) == [
        "the contrast: the fat image is bigger",
        "the contrast: the fat image installs more packages (attack surface)",
    ]
    # Bigger but not more packages (a fat layer of data, not of tools): still no lesson.
    assert failed(lesson.judge(half({**FAT, "packages": 120}), half(SLIM))) == [
        "the contrast: the fat image installs more packages (attack surface)"
    ]
    # A half whose image never got ready fails too.
    assert "the wrong way: the fat image built, started and got ready" in failed(
        lesson.judge(half({**FAT, "ready_s": None}), half(SLIM))
    )
    wrong, right = half(FAT), half(SLIM)
    wrong["series"] = {"rss_mb": [[12.0, 80.5], [13.0, 81.0]]}
    right["series"] = {"rss_mb": [[11.0, 79.0], [12.0, 79.5]]}
    report = lesson_report(lesson, "compose", {"wrong": wrong, "right": right}, [], 0.0)
    html_path = write_lesson_report(report, tmp_path)
    outline = Outline()
    outline.feed(html_path.read_text())
    assert outline.ids[0] == "mistake" and outline.ids[-1] == "fix", outline.ids
    assert outline.svgs == len(report["charts"]) == 2
    sides = {row["measure"]: row for row in report["comparison"]}
    assert (sides["image size"]["wrong"], sides["image size"]["right"]) == ("690 MB", "230 MB")
    assert (sides["packages"]["wrong"], sides["packages"]["right"]) == ("402", "110")
    fixes = "\n".join(f["text"] for f in report["fixes"])
    assert "COPY --from=builder /opt/venv /opt/venv" in fixes and "python:3.12-slim" in fixes


def test_fat_image_on_another_runtime_says_it_is_compose_only(tmp_path: Path) -> None:
    import os

    from drill_support import meshctl

    env = {**os.environ, "MESH_HOME": str(tmp_path)}
    done = meshctl(env, "drill", "lesson-fat-image", "--runtime", "local", timeout=60)
    assert done.returncode == 1
    assert "runs on the compose runtime only, not on local" in done.stderr
    listed = meshctl(env, "drill", "list", timeout=60).stdout
    assert "lesson-fat-image    [lesson, compose only]" in listed
