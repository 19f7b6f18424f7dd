"""Lessons: one operation run twice under the same load, the wrong way and then the right way,
and a report that puts the two runs side by side.

Each half is an ordinary drill (:class:`~loadtests.drills.engine.Drill`, run by
:func:`~loadtests.drills.engine.run_drill`, with its own report in ``wrong/`` and ``right/``).
What a lesson adds is the judgement of the *contrast*: :meth:`Lesson.expect` says what each
half must show (the wrong way hurts, the right way does not), from the measurements the half
left in its report's summary. A lesson passes only when both are really measured, so the
same judgement given two runs of the right way fails: that is how a lesson proves that it
teaches something.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from infra.runtime import Runtime, RuntimeFailure
from loadtests.drills.audit import OrderAudit
from loadtests.drills.engine import (
    SLO,
    Drill,
    DrillContext,
    DrillOptions,
    Say,
    run_drill,
    say_stderr,
)

Role = Literal["wrong", "right"]
ROLES: tuple[Role, Role] = ("wrong", "right")
ROLE_TITLES: dict[Role, str] = {"wrong": "the wrong way", "right": "the right way"}
# SLOs the engine adds to any drill that could not run properly; they fail a lesson too.
ENGINE_SLOS = frozenset({"operation completed", "load ran"})


@dataclass(frozen=True)
class Fix:
    """The fix as the user writes it in one place (a compose file, a manifest, a version file)."""

    title: str
    language: str  # yaml, dotenv
    text: str


@dataclass(frozen=True)
class Chart:
    """One chart of the lesson report: the same measure of both halves on the same axes.

    ``value`` reads one timeline row (``None``: nothing measured that second); ``lines`` are
    horizontal marks (a limit, a ceiling) and ``projection`` a dashed line of where a series
    was heading, both in data units.
    """

    key: str
    title: str
    caption: str
    ylabel: str
    value: Callable[[Mapping[str, Any]], float | None]
    log: bool = False
    step: bool = False  # counts: drawn as steps
    # Read from the half's own series of that name (sampled faster than once a second);
    # ``value`` over its timeline when the half recorded none.
    series: str | None = None
    lines: Callable[[Mapping[Role, Mapping[str, Any]]], list[tuple[str, float]]] = (
        lambda _summaries: []
    )
    projection: Callable[[Mapping[Role, Mapping[str, Any]]], list[tuple[float, float]]] = (
        lambda _summaries: []
    )


@dataclass
class Contrast:
    """A second side-by-side a lesson measures after its two halves, outside any load (the
    persistence lesson on compose: ``down`` then ``up`` without, then with, the named
    volume). ``rows``: measure, how, and the value of each side under ``wrong``/``right``;
    its SLOs are the lesson's too."""

    key: str
    title: str
    caption: str
    columns: tuple[str, str]  # what the wrong and the right side are
    rows: list[dict[str, str]]
    slos: list[SLO]
    events: list[str] = field(default_factory=list)


class Lesson(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]  # one line: what the lesson runs
    mistake: ClassVar[str]  # one paragraph: the mistake, for the top of the report
    half_duration: ClassVar[float] = 35.0

    def __init__(self, options: DrillOptions) -> None:
        self.options = options
        self.duration = options.duration or self.half_duration

    @abstractmethod
    def half(self, role: Role) -> LessonHalf:
        """The drill of one half."""

    @abstractmethod
    def expect(self, role: Role, measured: Mapping[str, Any]) -> list[SLO]:
        """What the half must show, judged on its measurements (its report's summary)."""

    @abstractmethod
    def fixes(self) -> list[Fix]:
        """The fix as the user would write it."""

    @abstractmethod
    def charts(self) -> list[Chart]:
        """What the report draws, both halves on the same axes."""

    @abstractmethod
    def comparison(self) -> list[tuple[str, str, Callable[[Mapping[str, Any]], str]]]:
        """Rows of the side-by-side table: (what, how it is measured, the value of a half)."""

    def contrasts(self, runtime: Runtime, say: Say) -> list[Contrast]:
        """What the lesson measures after its halves on this runtime (none by default)."""
        return []

    def judge(self, wrong: Mapping[str, Any], right: Mapping[str, Any]) -> list[SLO]:
        """The lesson's verdicts from the two halves' reports."""
        slos = []
        reports: tuple[tuple[Role, Mapping[str, Any]], ...] = (("wrong", wrong), ("right", right))
        for role, report in reports:
            broken = [
                SLO(**s)
                for s in report.get("slos", [])
                if s.get("name") in ENGINE_SLOS and not s.get("passed")
            ]
            for slo in [*broken, *self.expect(role, report.get("summary", {}))]:
                slo.name = f"{ROLE_TITLES[role]}: {slo.name}"
                slos.append(slo)
        return slos


class LessonHalf(Drill):
    """A drill that is one half of a lesson: it measures, and the lesson judges."""

    def __init__(self, options: DrillOptions, lesson: Lesson, role: Role) -> None:
        self.lesson = lesson
        self.role = role
        super().__init__(options)
        self.duration = lesson.duration

    def title_for(self, ctx: DrillContext) -> str:
        return f"{self.lesson.title}, {ROLE_TITLES[self.role]}"

    @abstractmethod
    def measure(
        self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit
    ) -> dict[str, float | int | str]:
        """Numbers (and short texts) the lesson judges; they land in the report's summary."""

    def judge(self, ctx: DrillContext, rows: list[dict[str, Any]], audit: OrderAudit) -> list[SLO]:
        measured = self.measure(ctx, rows, audit)
        ctx.facts.update(measured)
        summary = {
            "orders_accepted": audit.accepted,
            "orders_lost": len(audit.lost),
            **measured,
        }
        return self.lesson.expect(self.role, summary)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "lesson": self.lesson.name, "half": self.role}


@dataclass
class LessonResult:
    report: dict[str, Any]
    folder: Path
    passed: bool
    halves: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_lesson(
    lesson: Lesson, runtime: Runtime, folder: Path, say: Say = say_stderr
) -> LessonResult:
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    say(f"lesson {lesson.name} on {runtime.name}: {lesson.title}")
    say(f"  {lesson.description}")
    halves: dict[str, dict[str, Any]] = {}
    for number, role in enumerate(ROLES, start=1):
        say(f"lesson {lesson.name}, run {number} of 2: {ROLE_TITLES[role]}")
        try:
            result = run_drill(lesson.half(role), runtime, folder / role, say)
        except RuntimeFailure as exc:
            raise RuntimeFailure(f"lesson {lesson.name}, {ROLE_TITLES[role]}: {exc}") from None
        halves[role] = result.report
    slos = lesson.judge(halves["wrong"], halves["right"])
    try:
        contrasts = lesson.contrasts(runtime, say)
    except RuntimeFailure as exc:
        # Judged, not raised: the report of the two runs is still written.
        say(f"lesson {lesson.name}, after its runs: {exc}")
        contrasts = []
        slos.append(SLO("what the lesson measures after its runs", "no error", str(exc), False))
    for contrast in contrasts:
        slos += [dataclasses.replace(s, name=f"{contrast.title}: {s.name}") for s in contrast.slos]
    report = lesson_report(lesson, runtime.name, halves, slos, started)
    report["contrasts"] = [asdict(c) for c in contrasts]
    from loadtests.drills.lesson_report import write_lesson_report  # matplotlib

    html = write_lesson_report(report, folder)
    for slo in report["slos"]:
        mark = "PASS" if slo["passed"] else "FAIL"
        say(f"  [{mark}] {slo['name']}: {slo['measured']} (threshold {slo['threshold']})")
    verdict = "PASSED" if report["passed"] else "FAILED"
    say(f"lesson {lesson.name} {verdict}; report: {html}")
    return LessonResult(report, folder, report["passed"], halves)


def _points(chart: Chart, half: Mapping[str, Any]) -> list[list[Any]]:
    sampled = (half.get("series") or {}).get(chart.series) if chart.series else None
    if sampled:
        return [list(point) for point in sampled]
    return [[row["t"], chart.value(row)] for row in half.get("timeline", [])]


def lesson_report(
    lesson: Lesson,
    runtime: str,
    halves: Mapping[str, Mapping[str, Any]],
    slos: Sequence[SLO],
    started: float,
) -> dict[str, Any]:
    """The lesson's report: both halves' timelines, the charts' data, verdicts and the fix."""
    summaries: dict[Role, Mapping[str, Any]] = {
        role: halves[role].get("summary", {}) for role in ROLES
    }
    charts = []
    for chart in lesson.charts():
        charts.append(
            {
                "key": chart.key,
                "title": chart.title,
                "caption": chart.caption,
                "ylabel": chart.ylabel,
                "log": chart.log,
                "step": chart.step,
                "series": {role: _points(chart, halves[role]) for role in ROLES},
                "lines": [list(line) for line in chart.lines(summaries)],
                "projection": [list(point) for point in chart.projection(summaries)],
            }
        )
    finished = time.time()
    return {
        "lesson": lesson.name,
        "title": lesson.title,
        "description": lesson.description,
        "mistake": lesson.mistake,
        "runtime": runtime,
        "started_at": started,
        "finished_at": finished,
        "duration_s": round(finished - started, 1),
        "halves": {
            role: {
                "title": ROLE_TITLES[role],
                "report": f"{role}/report.html",
                "drill_title": halves[role].get("title"),
                "passed": halves[role].get("passed"),
                "operation": halves[role].get("operation", {}),
                "params": halves[role].get("params", {}),
                "summary": halves[role].get("summary", {}),
            }
            for role in ROLES
        },
        "comparison": [
            {
                "measure": what,
                "how": how,
                **{role: value(summaries[role]) for role in ROLES},
            }
            for what, how, value in lesson.comparison()
        ],
        "charts": charts,
        "slos": [asdict(s) for s in slos],
        "fixes": [asdict(f) for f in lesson.fixes()],
        "passed": bool(slos) and all(s.passed for s in slos),
    }
