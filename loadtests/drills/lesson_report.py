"""The lesson report: ``report.json``, ``report.html`` and one PNG per chart, beside the two
halves' own drill reports (``wrong/``, ``right/``).

The page opens with the mistake in one paragraph, gives the verdicts and the two runs side
by side, draws each chart with both runs on the same axes (seconds since each run's load
started; where each run's operation began and ended is marked in its colour), lists what
each run did, and ends with the fix as the user would write it. Like the drill report it
loads nothing and escapes every string taken from the report.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from loadtests.drills.report import (
    _CSS,
    AXES_HEIGHT,
    AXES_LEFT,
    AXES_RIGHT_MARGIN,
    BOTTOM_MARGIN,
    FIG_WIDTH,
    TOP_MARGIN,
    _e,
    _jsonable,
    _legend,
    _mpl,
    _no_data,
    _opt_num,
    _seconds,
    _slo_table,
    _when,
    chart_style,
    figure_outputs,
    figure_title,
    verdict,
)

ROLES = ("wrong", "right")
COLORS = {"wrong": "#c62828", "right": "#1e7d32"}
LABELS = {"wrong": "the wrong way", "right": "the right way"}
LINE_COLOR = "#555555"

_LESSON_CSS = """
.mistake { font-size: 1.05rem; background: #fff4f2; border-left: 4px solid #c62828;
           padding: .6rem .9rem; margin: .8rem 0 1rem; }
table.side td.wrong { color: #8e1b1b; } table.side td.right { color: #1b5e20; }
pre.fix { background: #f6f8fa; border: 1px solid #ddd; padding: .6rem .8rem;
          overflow-x: auto; font-size: .85rem; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em;
          vertical-align: -.1em; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
"""


def write_lesson_report(report: Mapping[str, Any], folder: Path) -> Path:
    """Write ``report.json``, ``charts/<chart>.png`` and ``report.html``; return the HTML."""
    folder = Path(folder)
    charts_dir = folder / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(
        json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    svgs = []
    for chart in report.get("charts") or []:
        svg, png = render_lesson_chart(chart, report)
        (charts_dir / f"{chart['key']}.png").write_bytes(png)
        svgs.append((chart, svg))
    path = folder / "report.html"
    path.write_text(_page(report, svgs), encoding="utf-8")
    return path


def _op_span(report: Mapping[str, Any], role: str) -> tuple[float | None, float | None]:
    operation = (report.get("halves") or {}).get(role, {}).get("operation") or {}
    return _opt_num(operation.get("start")), _opt_num(operation.get("end"))


def render_lesson_chart(chart: Mapping[str, Any], report: Mapping[str, Any]) -> tuple[str, bytes]:
    """Both runs of one measure on the same axes, as SVG text and PNG bytes."""
    key = str(chart.get("key", "chart"))
    with matplotlib.rc_context(chart_style(f"lesson-{key}")):
        height = TOP_MARGIN + AXES_HEIGHT + BOTTOM_MARGIN
        fig = Figure(figsize=(FIG_WIDTH, height), layout=None)
        left = AXES_LEFT / FIG_WIDTH
        width = (FIG_WIDTH - AXES_LEFT - AXES_RIGHT_MARGIN) / FIG_WIDTH
        ax = fig.add_axes((left, BOTTOM_MARGIN / height, width, AXES_HEIGHT / height))
        ax.grid(True, axis="y", color="#e4e4e4", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel("seconds since the run's load started", fontsize=9)
        figure_title(fig, height, f"{report.get('lesson', 'lesson')}: {chart.get('title', '')}")
        x_max = 1.0
        values: list[float] = []
        series = chart.get("series") or {}
        for role in ROLES:
            points = [
                (float(t), math.nan if y is None else float(y))
                for t, y in series.get(role) or []
                if _opt_num(t) is not None
            ]
            if points:
                x_max = max(x_max, points[-1][0])
            values += [y for _, y in points if not math.isnan(y)]
            start, end = _op_span(report, role)
            # Each run's operation: a solid line where it began, a dotted one where it ended.
            if start is not None:
                ax.axvline(start, color=COLORS[role], lw=0.9, alpha=0.6)
            if end is not None:
                ax.axvline(end, color=COLORS[role], lw=0.9, ls=":", alpha=0.8)
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=COLORS[role],
                    lw=1.5,
                    marker=".",
                    ms=3,
                    label=LABELS[role],
                    drawstyle="steps-post" if chart.get("step") else "default",
                )
        projection = [(float(x), float(y)) for x, y in chart.get("projection") or []]
        if len(projection) >= 2:
            ax.plot(
                [p[0] for p in projection],
                [p[1] for p in projection],
                color=COLORS["wrong"],
                lw=1.2,
                ls="--",
                label="where it was heading",
            )
            x_max = max(x_max, projection[-1][0])
            values += [p[1] for p in projection]
        for number, (label, y) in enumerate(chart.get("lines") or []):
            ax.axhline(float(y), color=LINE_COLOR, lw=0.9, ls=(0, (4, 2 + 2 * number)))
            ax.annotate(
                _mpl(str(label)),
                xy=(0, float(y)),
                xytext=(3, 2),
                textcoords="offset points",
                fontsize=7.5,
                color=LINE_COLOR,
            )
            values.append(float(y))
        ax.set_xlim(0, x_max)
        ax.set_ylabel(_mpl(str(chart.get("ylabel", ""))), fontsize=9)
        positive = [v for v in values if v > 0]
        if not values:
            _no_data(ax, "nothing measured")
        elif chart.get("log") and positive:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_ylim(0, max(1.0, max(values) * 1.08))
        _legend(ax)
        return figure_outputs(fig, f"lesson-{key}", str(chart.get("title", key)))


def _comparison(
    report: Mapping[str, Any],
    rows: Any = None,
    labels: tuple[str, str] = (LABELS["wrong"], LABELS["right"]),
) -> str:
    rows = report.get("comparison") or [] if rows is None else rows
    if not rows:
        return '<p class="none">Nothing to compare.</p>'
    head = (
        "<tr><th>measure</th><th>how</th>"
        f'<th><span class="swatch" style="background:{COLORS["wrong"]}"></span>{_e(labels[0])}</th>'
        f'<th><span class="swatch" style="background:{COLORS["right"]}"></span>{_e(labels[1])}</th>'
        "</tr>"
    )
    body = "\n".join(
        f'<tr><th scope="row">{_e(r.get("measure"))}</th><td>{_e(r.get("how"))}</td>'
        f'<td class="wrong">{_e(r.get("wrong"))}</td>'
        f'<td class="right">{_e(r.get("right"))}</td></tr>'
        for r in rows
        if isinstance(r, Mapping)
    )
    return f'<table class="side">\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _contrasts(report: Mapping[str, Any]) -> str:
    """Each side-by-side measured after the two runs (lesson-persistence on compose)."""
    parts = []
    for c in report.get("contrasts") or []:
        columns = tuple(str(x) for x in c.get("columns") or ("", ""))
        events = "\n".join(f"<li>{_e(e)}</li>" for e in c.get("events") or [])
        parts.append(
            f'<section id="contrast-{_e(c.get("key"))}">\n<h2>{_e(c.get("title"))}</h2>\n'
            f"<p>{_e(c.get('caption'))}</p>\n"
            + _comparison(report, c.get("rows") or [], (columns[0], columns[1]))
            + (
                f"\n<details><summary>What was done</summary><ol>{events}</ol></details>"
                if events
                else ""
            )
            + "\n</section>"
        )
    return "\n".join(parts)


def _runs(report: Mapping[str, Any]) -> str:
    parts = []
    for role in ROLES:
        half = (report.get("halves") or {}).get(role) or {}
        operation = half.get("operation") or {}
        events = "\n".join(
            f'<li><span class="t">{_seconds(_opt_num(ev.get("t")))}</span> '
            f"{_e(ev.get('message'))}</li>"
            for ev in operation.get("events") or []
            if isinstance(ev, Mapping)
        )
        link = html.escape(str(half.get("report", f"{role}/report.html")), quote=True)
        parts.append(
            f'<h3><span class="swatch" style="background:{COLORS[role]}"></span>'
            f"{_e(half.get('title', LABELS[role]))}: {_e(operation.get('name'))}</h3>\n"
            f"<p>Operation from {_seconds(_opt_num(operation.get('start')))} to "
            f"{_seconds(_opt_num(operation.get('end')))}; its full drill report, with every "
            f'chart of the platform: <a href="{link}">{link}</a>.</p>\n'
            f'<ol class="events">\n{events}\n</ol>'
        )
    return "\n".join(parts)


def _fixes(report: Mapping[str, Any]) -> str:
    parts = []
    for fix in report.get("fixes") or []:
        if isinstance(fix, Mapping):
            parts.append(
                f"<h3>{_e(fix.get('title'))}</h3>\n"
                f'<pre class="fix"><code>{html.escape(str(fix.get("text", "")))}</code></pre>'
            )
    return "\n".join(parts) or '<p class="none">No fix recorded.</p>'


def _page(report: Mapping[str, Any], svgs: list[tuple[Mapping[str, Any], str]]) -> str:
    result = verdict(report)
    badge = {"PASS": "pass", "FAIL": "fail"}.get(result, "unknown")
    title = str(report.get("title") or report.get("lesson") or "lesson")
    meta = " \u00b7 ".join(
        [
            f"lesson <strong>{_e(report.get('lesson'))}</strong>",
            f"runtime <strong>{_e(report.get('runtime'))}</strong>",
            f"started {_when(report.get('started_at'))}",
            f"duration {_seconds(_opt_num(report.get('duration_s')))}",
        ]
    )
    charts = "\n".join(
        f'<section id="chart-{_e(chart.get("key"))}" class="chart">\n'
        f"<h2>{_e(chart.get('title'))}</h2>\n<figure>\n{svg}\n<figcaption>"
        f"{_e(chart.get('caption'))} Vertical lines: each run's operation began (solid) "
        "and ended (dotted). "
        f"PNG: charts/{_e(chart.get('key'))}.png</figcaption>\n</figure>\n</section>"
        for chart, svg in svgs
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.get('lesson'))}: {result} \u2014 {_e(title)}</title>",
        f"<style>{_CSS}{_LESSON_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f'<h1>{_e(title)} <span class="badge {badge}">{result}</span></h1>',
        f'<p class="meta">{meta}</p>',
        "</header>",
        f'<p class="mistake" id="mistake">{_e(report.get("mistake"))}</p>',
        f'<p class="description">{_e(report.get("description"))}</p>',
        '<section id="slo">\n<h2>Verdicts</h2>',
        "<p>The lesson passes when the contrast is measured: the wrong way hurts, the right "
        "way does not.</p>",
        _slo_table(report),
        "</section>",
        '<section id="side-by-side">\n<h2>The two runs side by side</h2>',
        _comparison(report),
        "</section>",
        _contrasts(report),
        charts,
        '<section id="runs">\n<h2>What each run did</h2>',
        _runs(report),
        "</section>",
        '<section id="fix">\n<h2>The fix</h2>',
        _fixes(report),
        "</section>",
        f"<footer>Lesson report written by meshctl drill {_e(report.get('lesson'))}; the data "
        "is in report.json beside this file.</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(part for part in body if part)
