"""The drill report: ``report.json``, a self-contained ``report.html`` and one PNG per chart.

``write_report(report, folder)`` is called by the drill engine with the report dict (see the
drill engine for its shape). Every chart shares one time axis (seconds since the drill started)
and marks the operation: a shaded span labelled with its name, a thin numbered line at each
operation event (the messages are listed under the charts in the HTML), and the phases, lightly.

The HTML loads nothing: inline CSS, charts inline as SVG with text kept as text
(``svg.fonttype = none``), no script. Every string taken from the report is escaped.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

# A drill runs headless; Agg never needs a display.
matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

CHARTS: tuple[str, ...] = ("throughput", "latency", "errors", "replicas", "weights", "lag")

CHART_TITLES = {
    "throughput": "Throughput",
    "latency": "Latency",
    "errors": "Errors",
    "replicas": "Replicas",
    "weights": "Gateway traffic weights",
    "lag": "Kafka consumer lag",
}

CHART_CAPTIONS = {
    "throughput": "Requests per second and failed requests per second.",
    "latency": "Response time percentiles of the requests finished in each second, in ms.",
    "errors": "Failed requests per second (bars) and the share of requests that failed (line).",
    "replicas": "Running replicas per service and version.",
    "weights": "Share of each service's traffic the gateway sends to each version, in %.",
    "lag": "Kafka consumer lag per consuming service, in messages.",
}

# Above this many service/version lines the replicas chart keeps only services that changed.
MAX_REPLICA_SERIES = 6
# A latency range wider than this factor is drawn on a log scale.
LOG_SCALE_RATIO = 20.0
# Longer labels are cut in the charts; the HTML keeps the full text.
MAX_LABEL_CHARS = 28
MAX_OPERATION_CHARS = 70

# Figure geometry in inches: fixed margins so the time axes of all charts line up.
FIG_WIDTH = 11.0
AXES_LEFT = 0.8
AXES_RIGHT_MARGIN = 2.6
AXES_HEIGHT = 2.8
BOTTOM_MARGIN = 0.5
TOP_MARGIN = 0.4
STRIP_ROW = 0.17
LEGEND_OFFSET = 0.75  # room for the right-hand axis of the errors chart
PNG_DPI = 110

STRIP_FONT = 7.5
EVENT_ROWS_MAX = 3
CHAR_WIDTH = 0.62  # average glyph width in em; enough to keep event numbers apart

OPERATION_COLOR = "#e69b2e"
EVENT_COLOR = "#a35a12"
PHASE_COLOR = "#7a7a7a"
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#ff7f0e",
)


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote."""

    json: Path
    html: Path
    pngs: dict[str, Path]


def write_report(report: Mapping[str, Any], folder: Path) -> ReportFiles:
    """Write ``report.json``, ``report.html`` and ``charts/<chart>.png`` into ``folder``."""
    folder = Path(folder)
    charts_dir = folder / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)

    # The data first: should a chart fail to render, the measurements are kept.
    json_path = folder / "report.json"
    json_path.write_text(
        json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    ctx = _Context.from_report(report)
    svgs: dict[str, str] = {}
    pngs: dict[str, Path] = {}
    for chart in CHARTS:
        svg, png = _render_chart(chart, ctx)
        svgs[chart] = svg
        png_path = charts_dir / f"{chart}.png"
        png_path.write_bytes(png)
        pngs[chart] = png_path

    html_path = folder / "report.html"
    html_path.write_text(_html_page(report, ctx, svgs), encoding="utf-8")
    return ReportFiles(json=json_path, html=html_path, pngs=pngs)


# --- reading the report, tolerantly -------------------------------------------------------


def _num(value: Any) -> float:
    """A finite float, or NaN for None, NaN, infinities and anything not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            return math.nan
    else:
        return math.nan
    return result if math.isfinite(result) else math.nan


def _opt_num(value: Any) -> float | None:
    result = _num(value)
    return None if math.isnan(result) else result


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class _Event:
    number: int
    t: float | None
    message: str


@dataclass(frozen=True)
class _Phase:
    name: str
    start: float
    end: float


@dataclass
class _Context:
    """The report, reduced to what the charts and the HTML need."""

    drill: str
    rows: list[Mapping[str, Any]]
    t: list[float]
    x_min: float
    x_max: float
    op_name: str
    op_start: float | None
    op_end: float | None
    events: list[_Event]
    phases: list[_Phase]
    event_labels: list[_EventLabel] = field(default_factory=list)
    event_rows: int = 0

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> _Context:
        raw_rows = report.get("timeline") or []
        rows = [r for r in raw_rows if isinstance(r, Mapping) and not math.isnan(_num(r.get("t")))]
        rows.sort(key=lambda r: _num(r.get("t")))
        t = [_num(r.get("t")) for r in rows]

        op = _mapping(report.get("operation"))
        op_start = _opt_num(op.get("start"))
        op_end = _opt_num(op.get("end"))
        events = [
            _Event(i, _opt_num(e.get("t")), _text(e.get("message")))
            for i, e in enumerate(
                (e if isinstance(e, Mapping) else {"message": e} for e in op.get("events") or []),
                start=1,
            )
        ]
        phases = []
        for p in report.get("phases") or []:
            if not isinstance(p, Mapping):
                continue
            start, end = _opt_num(p.get("start")), _opt_num(p.get("end"))
            if start is not None and end is not None and end >= start:
                phases.append(_Phase(_text(p.get("name")), start, end))

        duration = _opt_num(report.get("duration_s"))
        if duration is None:
            started, finished = (
                _opt_num(report.get("started_at")),
                _opt_num(report.get("finished_at")),
            )
            if started is not None and finished is not None:
                duration = finished - started
        marks = [*t, op_start, op_end, duration, *(e.t for e in events)]
        marks += [v for p in phases for v in (p.start, p.end)]
        known = [v for v in marks if v is not None]
        x_min = min([0.0, *known])
        x_max = max([x_min + 1.0, *known])

        ctx = cls(
            drill=_text(report.get("drill")) or "drill",
            rows=rows,
            t=t,
            x_min=x_min,
            x_max=x_max,
            op_name=_text(op.get("name")) or ("operation" if op_start is not None else ""),
            op_start=op_start,
            op_end=op_end,
            events=events,
            phases=phases,
        )
        ctx.event_labels, ctx.event_rows = _place_event_labels(ctx)
        return ctx

    def column(self, key: str) -> list[float]:
        return [_num(r.get(key)) for r in self.rows]


# --- series --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    label: str
    y: list[float]


def _nested_keys(rows: Iterable[Mapping[str, Any]], key: str) -> list[tuple[str, str]]:
    """(service, version) pairs in the order they first appear; a bare number is version ''."""
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        for service, versions in _mapping(row.get(key)).items():
            if isinstance(versions, Mapping):
                for version in versions:
                    seen[(str(service), str(version))] = None
            else:
                seen[(str(service), "")] = None
    return list(seen)


def _nested_value(row: Mapping[str, Any], key: str, service: str, version: str) -> Any:
    versions = _mapping(row.get(key)).get(service)
    if isinstance(versions, Mapping):
        return versions.get(version)
    return versions if version == "" else None


def _series_label(service: str, version: str) -> str:
    return f"{service} {version}".strip()


def _replica_series(ctx: _Context) -> list[_Series]:
    series = []
    for service, version in _nested_keys(ctx.rows, "replicas"):
        y = []
        for row in ctx.rows:
            replicas = row.get("replicas")
            if not isinstance(replicas, Mapping):
                y.append(math.nan)  # not sampled that second
                continue
            value = _nested_value(row, "replicas", service, version)
            # A version missing from a sampled second has no replica left.
            y.append(0.0 if value is None else _num(value))
        series.append((service, _Series(_series_label(service, version), y)))
    if len(series) <= MAX_REPLICA_SERIES:
        return [s for _, s in series]
    changed = {svc for svc, s in series if len({v for v in s.y if not math.isnan(v)}) > 1}
    return [s for svc, s in series if not changed or svc in changed]


def _weight_series(ctx: _Context) -> list[_Series]:
    keys = _nested_keys(ctx.rows, "weights")
    columns: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    for row in ctx.rows:
        weights = _mapping(row.get("weights"))
        for service, version in keys:
            raw = _nested_value(row, "weights", service, version)
            versions = weights.get(service)
            # Relative weights (1:3) and percentages (25/75) both end up as a share in %.
            if isinstance(versions, Mapping):
                total = sum(v for v in (_num(w) for w in versions.values()) if not math.isnan(v))
            else:
                total = _num(versions)
            value = _num(raw)
            share = value / total * 100.0 if total and total > 0 else math.nan
            columns[(service, version)].append(share)
    return [_Series(_series_label(s, v), columns[(s, v)]) for s, v in keys]


def _lag_series(ctx: _Context) -> list[_Series]:
    services: dict[str, None] = {}
    for row in ctx.rows:
        services.update(dict.fromkeys(str(s) for s in _mapping(row.get("lag"))))
    return [
        _Series(service, [_num(_mapping(row.get("lag")).get(service)) for row in ctx.rows])
        for service in services
    ]


def _error_percent(ctx: _Context) -> list[float]:
    result = []
    for row in ctx.rows:
        requests, failures = _num(row.get("requests")), _num(row.get("failures"))
        if not math.isnan(requests) and not math.isnan(failures) and requests > 0:
            # Locust counts failed requests among the requests.
            result.append(min(100.0, failures / requests * 100.0))
        elif not math.isnan(failures) and failures > 0:
            result.append(100.0)
        else:
            rate = _num(row.get("error_rate"))
            result.append(rate * 100.0 if not math.isnan(rate) else math.nan)
    return result


# --- operation marks -------------------------------------------------------------------------


@dataclass
class _EventLabel:
    x: float
    numbers: list[int]
    row: int

    @property
    def text(self) -> str:
        nums = self.numbers
        if len(nums) > 2 and nums == list(range(nums[0], nums[0] + len(nums))):
            return f"{nums[0]}\u2013{nums[-1]}"
        return ",".join(str(n) for n in nums)


def _axes_width_pt() -> float:
    return (FIG_WIDTH - AXES_LEFT - AXES_RIGHT_MARGIN) * 72.0


def _label_width_pt(text: str) -> float:
    return len(text) * CHAR_WIDTH * STRIP_FONT + 5.0  # offset from the line and bbox padding


def _place_event_labels(ctx: _Context) -> tuple[list[_EventLabel], int]:
    """Event numbers in up to EVENT_ROWS_MAX rows so that no two overlap.

    An event with no free row joins the label placed last ("3-5"), which only widens to the
    right, where nothing has been placed yet.
    """
    pt_per_s = _axes_width_pt() / (ctx.x_max - ctx.x_min)
    row_end = [-math.inf] * EVENT_ROWS_MAX
    labels: list[_EventLabel] = []
    timed = sorted((e for e in ctx.events if e.t is not None), key=lambda e: (e.t, e.number))
    for event in timed:
        assert event.t is not None
        x_pt = (event.t - ctx.x_min) * pt_per_s
        text = str(event.number)
        row = next((r for r in range(EVENT_ROWS_MAX) if row_end[r] + 1.0 <= x_pt), None)
        if row is None:
            last = labels[-1]
            last.numbers.append(event.number)
            row_end[last.row] = (last.x - ctx.x_min) * pt_per_s + _label_width_pt(last.text)
            continue
        labels.append(_EventLabel(event.t, [event.number], row))
        row_end[row] = x_pt + _label_width_pt(text)
    return labels, (max(label.row for label in labels) + 1 if labels else 0)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _mpl(text: str) -> str:
    """Data strings as plain matplotlib text: a '$' would start mathtext."""
    return text.replace("$", r"\$")


def _legend_label(text: str) -> str:
    # Matplotlib hides legend entries whose label starts with an underscore.
    text = _mpl(_clip(text, MAX_LABEL_CHARS))
    return "\u200b" + text if text.startswith("_") else text


# --- charts ----------------------------------------------------------------------------------


@dataclass
class _Layout:
    fig: Figure
    ax: Axes
    strip: Axes
    op_row: int | None
    phase_row: int | None
    first_event_row: int
    rows: int


def _new_figure(ctx: _Context, chart: str) -> _Layout:
    rows = 0
    op_row = phase_row = None
    if ctx.op_start is not None:
        op_row, rows = rows, rows + 1
    if ctx.phases:
        phase_row, rows = rows, rows + 1
    first_event_row = rows
    rows += ctx.event_rows
    strip_h = max(rows, 1) * STRIP_ROW
    height = TOP_MARGIN + strip_h + AXES_HEIGHT + BOTTOM_MARGIN
    fig = Figure(figsize=(FIG_WIDTH, height), layout=None)
    left = AXES_LEFT / FIG_WIDTH
    width = (FIG_WIDTH - AXES_LEFT - AXES_RIGHT_MARGIN) / FIG_WIDTH
    ax = fig.add_axes((left, BOTTOM_MARGIN / height, width, AXES_HEIGHT / height))
    strip = fig.add_axes(
        (left, (BOTTOM_MARGIN + AXES_HEIGHT) / height, width, strip_h / height), sharex=ax
    )
    strip.set_axis_off()
    strip.set_ylim(0, max(rows, 1))
    ax.set_xlim(ctx.x_min, ctx.x_max)
    ax.set_xlabel("seconds since the drill started", fontsize=9)
    ax.grid(True, axis="y", color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    figure_title(fig, height, f"{ctx.drill}: {CHART_TITLES[chart]}")
    return _Layout(fig, ax, strip, op_row, phase_row, first_event_row, max(rows, 1))


def figure_title(fig: Figure, height: float, text: str) -> None:
    """The chart's title, top left above the axes (drill and lesson reports)."""
    fig.text(
        AXES_LEFT / FIG_WIDTH,
        1 - 0.12 / height,
        _mpl(text),
        ha="left",
        va="top",
        fontsize=11,
        fontweight="bold",
    )


def _row_y(layout: _Layout, row: int) -> float:
    return layout.rows - row - 0.5


def _mark_operation(ctx: _Context, layout: _Layout) -> None:
    ax, strip = layout.ax, layout.strip
    width_s = ctx.x_max - ctx.x_min
    pt_per_s = _axes_width_pt() / width_s

    for phase in ctx.phases:
        for target in (ax, strip):
            target.axvspan(phase.start, phase.end, color=PHASE_COLOR, alpha=0.05, lw=0, zorder=0)
        ax.axvline(phase.start, color=PHASE_COLOR, lw=0.5, ls=":", alpha=0.6, zorder=1)
        # Phase names are cut to their span so that neighbours never overlap.
        room = int((phase.end - phase.start) * pt_per_s / (CHAR_WIDTH * STRIP_FONT)) - 1
        if layout.phase_row is not None and room >= 3:
            strip.text(
                (phase.start + phase.end) / 2,
                _row_y(layout, layout.phase_row),
                _mpl(_clip(phase.name, room)),
                ha="center",
                va="center",
                fontsize=STRIP_FONT,
                style="italic",
                color=PHASE_COLOR,
            )

    if ctx.op_start is not None and layout.op_row is not None:
        end = ctx.op_end if ctx.op_end is not None else ctx.x_max
        for target in (ax, strip):
            target.axvspan(ctx.op_start, end, color=OPERATION_COLOR, alpha=0.16, lw=0, zorder=0)
        # Near the right edge the name reads leftwards from the end of the span instead.
        right = ctx.op_start - ctx.x_min > 0.6 * width_s
        strip.annotate(
            _mpl(_clip(ctx.op_name, MAX_OPERATION_CHARS)),
            xy=(end if right else ctx.op_start, _row_y(layout, layout.op_row)),
            xytext=(-3 if right else 3, 0),
            textcoords="offset points",
            ha="right" if right else "left",
            va="center",
            fontsize=STRIP_FONT + 0.5,
            fontweight="bold",
            color=EVENT_COLOR,
            annotation_clip=False,
        )

    for label in ctx.event_labels:
        y = _row_y(layout, layout.first_event_row + label.row)
        strip.vlines(label.x, 0, y, color=EVENT_COLOR, lw=0.6)
        strip.annotate(
            label.text,
            xy=(label.x, y),
            xytext=(2, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=STRIP_FONT,
            color=EVENT_COLOR,
            annotation_clip=False,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    for event in ctx.events:
        if event.t is not None:
            ax.axvline(event.t, color=EVENT_COLOR, lw=0.6, alpha=0.7, zorder=1)


def _no_data(ax: Axes, message: str) -> None:
    ax.text(
        0.5,
        0.5,
        message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=11,
        color="#666666",
    )
    ax.set_ylim(0, 1)
    ax.set_yticks([])


def _has_data(values: Iterable[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def _legend(ax: Axes, handles: Sequence[Any] | None = None) -> None:
    offset = 1.0 + LEGEND_OFFSET / (FIG_WIDTH - AXES_LEFT - AXES_RIGHT_MARGIN)
    kwargs: dict[str, Any] = {
        "loc": "upper left",
        "bbox_to_anchor": (offset, 1.0),
        "fontsize": 8,
        "frameon": False,
        "borderaxespad": 0.0,
    }
    if handles is not None:
        ax.legend(handles=list(handles), **kwargs)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _floor_zero(ax: Axes) -> None:
    _, top = ax.get_ylim()
    ax.set_ylim(0, max(top, 1.0))


def _plot_lines(ax: Axes, x: list[float], series: Sequence[_Series], *, step: bool) -> None:
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if step:
            ax.step(x, s.y, where="post", color=color, lw=1.5, label=_legend_label(s.label))
        else:
            ax.plot(x, s.y, color=color, lw=1.4, label=_legend_label(s.label))


def _chart_throughput(ctx: _Context, ax: Axes) -> None:
    rps = ctx.column("rps")
    # An engine that only counts requests per one-second sample gives the same number.
    rps = [r if not math.isnan(r) else q for r, q in zip(rps, ctx.column("requests"), strict=True)]
    failures = ctx.column("failures")
    if not _has_data(rps) and not _has_data(failures):
        _no_data(ax, "no samples")
        return
    ax.plot(ctx.t, rps, color=PALETTE[0], lw=1.5, label="requests/s")
    ax.plot(ctx.t, failures, color=PALETTE[1], lw=1.2, label="failures/s")
    ax.set_ylabel("per second", fontsize=9)
    _floor_zero(ax)
    _legend(ax)


def _chart_latency(ctx: _Context, ax: Axes) -> None:
    columns = [("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")]
    data = [(name, ctx.column(key)) for name, key in columns]
    values = [v for _, ys in data for v in ys if not math.isnan(v) and v > 0]
    if not values:
        _no_data(ax, "no samples" if not ctx.rows else "no request finished")
        return
    for i, (name, ys) in enumerate(data):
        ax.plot(ctx.t, ys, color=PALETTE[(0, 9, 1)[i]], lw=1.4, marker=".", ms=3, label=name)
    ax.set_ylabel("ms", fontsize=9)
    if max(values) / min(values) >= LOG_SCALE_RATIO:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel("ms (log scale)", fontsize=9)
    else:
        _floor_zero(ax)
    _legend(ax)


def _chart_errors(ctx: _Context, ax: Axes) -> None:
    failures = ctx.column("failures")
    percent = _error_percent(ctx)
    if not _has_data(failures) and not _has_data(percent):
        _no_data(ax, "no samples")
        return
    bars = ax.bar(
        ctx.t,
        [0.0 if math.isnan(f) else f for f in failures],
        width=0.8,
        color=PALETTE[1],
        alpha=0.55,
        label="failures/s",
    )
    ax.set_ylabel("failures per second", fontsize=9)
    _floor_zero(ax)
    ax2 = ax.twinx()
    (line,) = ax2.plot(ctx.t, percent, color="#5a0f0f", lw=1.4, label="error %")
    top = max([v for v in percent if not math.isnan(v)], default=0.0)
    ax2.set_ylim(0, min(100.0, max(1.0, top * 1.15)) if top < 100 else 105.0)
    ax2.set_ylabel("error %", fontsize=9)
    _legend(ax, handles=[bars, line])


def _chart_replicas(ctx: _Context, ax: Axes) -> None:
    series = _replica_series(ctx)
    if not series:
        _no_data(ax, "no replica samples")
        return
    _plot_lines(ax, ctx.t, series, step=True)
    ax.set_ylabel("replicas", fontsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _floor_zero(ax)
    _legend(ax)


def _chart_weights(ctx: _Context, ax: Axes) -> None:
    series = [s for s in _weight_series(ctx) if _has_data(s.y)]
    if not series:
        _no_data(ax, "no weights set")
        return
    _plot_lines(ax, ctx.t, series, step=True)
    ax.set_ylabel("% of the service's traffic", fontsize=9)
    ax.set_ylim(-3, 103)
    _legend(ax)


def _chart_lag(ctx: _Context, ax: Axes) -> None:
    series = [s for s in _lag_series(ctx) if _has_data(s.y)]
    if not series:
        _no_data(ax, "no consumer lag sampled")
        return
    _plot_lines(ax, ctx.t, series, step=False)
    ax.set_ylabel("messages behind", fontsize=9)
    _floor_zero(ax)
    _legend(ax)


_DRAW: dict[str, Callable[[_Context, Axes], None]] = {
    "throughput": _chart_throughput,
    "latency": _chart_latency,
    "errors": _chart_errors,
    "replicas": _chart_replicas,
    "weights": _chart_weights,
    "lag": _chart_lag,
}

_TAG = re.compile(r"<[^>]+>")
_ID = re.compile(r'(\sid=")')


def _scope_ids(svg: str, prefix: str) -> str:
    """Prefix every id and reference: six inline SVGs in one page must not share ids.

    Only tags are touched; matplotlib escapes '<' and '>' in text and attribute values.
    """

    def fix(match: re.Match[str]) -> str:
        tag = _ID.sub(lambda m: m.group(1) + prefix, match.group(0))
        return tag.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")

    return _TAG.sub(fix, svg)


def chart_style(chart: str, right_spine: bool = False) -> dict[Any, Any]:
    """The matplotlib settings of every chart (drill and lesson reports)."""
    return {
        "svg.fonttype": "none",  # text stays text: searchable, selectable and small
        "svg.hashsalt": f"drill-{chart}",  # same report, same SVG
        "font.size": 9,
        # One family, not matplotlib's list of ten, in every SVG text element.
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "axes.spines.top": False,
        "axes.spines.right": right_spine,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
    }


def figure_outputs(fig: Figure, chart: str, title: str) -> tuple[str, bytes]:
    """A drawn figure as an inline-ready SVG string (ids scoped to ``chart``) and PNG bytes;
    call it inside the chart's ``rc_context``."""
    svg_buf = io.StringIO()
    # No metadata: the default one names external URIs.
    no_meta = {"Type": None, "Creator": None, "Format": None, "Date": None}
    fig.savefig(svg_buf, format="svg", metadata=no_meta)
    png_buf = io.BytesIO()
    fig.savefig(png_buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
    # A bare Figure is not registered with pyplot: dropping it frees it; clear() breaks cycles.
    fig.clear()

    svg = svg_buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = _scope_ids(svg, f"{chart}-")
    label = html.escape(f"{title} chart", quote=True)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
    return svg, png_buf.getvalue()


def _render_chart(chart: str, ctx: _Context) -> tuple[str, bytes]:
    """The chart as an inline-ready SVG string and as PNG bytes."""
    with matplotlib.rc_context(chart_style(chart, right_spine=chart == "errors")):
        layout = _new_figure(ctx, chart)
        _DRAW[chart](ctx, layout.ax)
        _mark_operation(ctx, layout)
        layout.ax.set_xlim(ctx.x_min, ctx.x_max)
        return figure_outputs(layout.fig, chart, CHART_TITLES[chart])


# --- HTML ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(_fmt(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\u2014"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) < 1:
            return f"{value:.4g}"
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping):
        return _compact(value)
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _compact(value: Mapping[Any, Any]) -> str:
    """{"orders": {"v1": 2, "v2": 1}} -> "orders: v1=2, v2=1"; flat maps -> "a=1, b=2"."""
    if not value:
        return "\u2014"
    if any(isinstance(v, Mapping) for v in value.values()):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())


def _when(value: Any) -> str:
    ts = _opt_num(value)
    if ts is None:
        return "\u2014"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return _fmt(value)


def _seconds(value: float | None) -> str:
    return "\u2014" if value is None else f"{_fmt(round(value, 2))} s"


def verdict(report: Mapping[str, Any]) -> str:
    """ "PASS", "FAIL" or "NO VERDICT", as the badge shows it.

    FAIL if the engine says so or any SLO failed; PASS if the engine says so or every SLO
    passed; otherwise no verdict.
    """
    slos = [s for s in report.get("slos") or [] if isinstance(s, Mapping)]
    passed = report.get("passed")
    if passed is False or any(s.get("passed") is False for s in slos):
        return "FAIL"
    if passed is True or (slos and all(s.get("passed") is True for s in slos)):
        return "PASS"
    return "NO VERDICT"


def _kv_table(data: Mapping[str, Any], caption: str) -> str:
    if not data:
        return f'<p class="none">No {html.escape(caption)}.</p>'
    rows = "\n".join(
        f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in data.items()
    )
    return f'<table class="kv">\n{rows}\n</table>'


def _slo_table(report: Mapping[str, Any]) -> str:
    slos = [s for s in report.get("slos") or [] if isinstance(s, Mapping)]
    if not slos:
        return '<p class="none">No SLOs were checked.</p>'
    rows = []
    for slo in slos:
        passed = slo.get("passed")
        if passed is True:
            shown, cls = "PASS", "pass"
        elif passed is False:
            shown, cls = "FAIL", "fail"
        else:
            shown, cls = "\u2014", "unknown"
        rows.append(
            f'<tr class="{cls}"><td>{_e(slo.get("name"))}</td><td>{_e(slo.get("threshold"))}</td>'
            f'<td>{_e(slo.get("measured"))}</td><td class="verdict">{shown}</td>'
            f"<td>{_e(slo.get('detail'))}</td></tr>"
        )
    head = "<tr><th>SLO</th><th>threshold</th><th>measured</th><th>verdict</th><th>detail</th></tr>"
    body = "\n".join(rows)
    return f'<table class="slos">\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _lost_section(report: Mapping[str, Any]) -> str:
    """Every order accepted (202) that did not reach a final state: one row each, with the
    columns the drill gave (id, when it was accepted, why it counts as lost...)."""
    rows = [r for r in report.get("lost") or [] if isinstance(r, Mapping)]
    if not rows:
        return ""
    columns = list(dict.fromkeys(str(k) for row in rows for k in row))
    total = _num(_mapping(report.get("summary")).get("orders_lost"))
    shown = f"{len(rows)} of {total:.0f}" if total == total and total > len(rows) else len(rows)
    return (
        f'<section id="lost">\n<h2>Lost orders ({shown})</h2>\n<div class="scroll">'
        f"{_rows_table(columns, rows, 'lost')}</div>\n</section>"
    )


def _rows_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], cls: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{_e(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return (
        f'<table class="{cls}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
        "</table>"
    )


_TIMELINE_FIRST = (
    "t",
    "users",
    "rps",
    "requests",
    "failures",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "replicas",
    "healthy",
    "weights",
    "lag",
)


def _timeline_table(ctx: _Context) -> str:
    if not ctx.rows:
        return '<p class="none">No samples were recorded.</p>'
    columns = [c for c in _TIMELINE_FIRST if any(c in r for r in ctx.rows)]
    for row in ctx.rows:
        columns += [str(k) for k in row if str(k) not in columns]
    return (
        f'<details>\n<summary>{len(ctx.rows)} samples, one a second</summary>\n<div class="scroll">'
        f"{_rows_table(columns, ctx.rows, 'timeline')}</div>\n</details>"
    )


def _cancellations_section(summary: Mapping[str, Any]) -> str:
    """The accepted orders that ended CANCELLED, per reason, with their share of all accepted
    ones: a wall of ``out_of_stock`` reads differently from a few declined payments."""
    parts = ['<section id="cancellations">', "<h2>Cancelled orders by reason</h2>"]
    reasons = _mapping(summary.get("cancelled_by_reason"))
    accepted = _opt_num(summary.get("orders_accepted"))
    if not reasons:
        parts.append('<p class="none">No accepted order was cancelled.</p>')
    else:
        rows = []
        for reason, count in reasons.items():
            number = _opt_num(count)
            share = f"{100 * number / accepted:.1f}%" if number is not None and accepted else None
            rows.append(f"<tr><td>{_e(reason)}</td><td>{_e(count)}</td><td>{_e(share)}</td></tr>")
        head = "<tr><th>reason</th><th>orders</th><th>share of accepted orders</th></tr>"
        body = "\n".join(rows)
        parts.append(
            f'<table class="cancellations">\n<thead>{head}</thead>\n<tbody>\n{body}\n'
            "</tbody>\n</table>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _events_section(ctx: _Context) -> str:
    parts = ['<section id="events">', "<h2>Operation events</h2>"]
    if ctx.op_start is None and not ctx.events:
        parts.append('<p class="none">No operation was recorded.</p>')
    else:
        end = _seconds(ctx.op_end) if ctx.op_end is not None else "not recorded (to the end)"
        parts.append(
            f'<p><span class="op-swatch"></span><strong>{_e(ctx.op_name)}</strong>: '
            f"from {_seconds(ctx.op_start)} to {html.escape(end)}. The numbers match the "
            "numbered lines in the charts.</p>"
        )
        if ctx.events:
            items = "\n".join(
                f'<li value="{ev.number}"><span class="t">{_seconds(ev.t)}</span> '
                f"{_e(ev.message)}</li>"
                for ev in ctx.events
            )
            parts.append(f'<ol class="events">\n{items}\n</ol>')
        else:
            parts.append('<p class="none">The operation reported no events.</p>')
    if ctx.phases:
        items = "\n".join(
            f"<li><strong>{_e(p.name)}</strong>: {_seconds(p.start)} \u2013 {_seconds(p.end)}</li>"
            for p in ctx.phases
        )
        parts.append(f'<h3>Phases</h3>\n<ul class="phases">\n{items}\n</ul>')
    parts.append("</section>")
    return "\n".join(parts)


_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: #1d1d1f; max-width: 1120px; margin: 1.5rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin: 1.8rem 0 .5rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
.meta { color: #555; margin: 0 0 1rem; }
.badge { display: inline-block; padding: .1rem .6rem; border-radius: .35rem; color: #fff;
         font-size: 1rem; vertical-align: middle; letter-spacing: .05em;
         -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.badge.pass { background: #1e7d32; } .badge.fail { background: #c62828; }
.badge.unknown { background: #757575; }
table { border-collapse: collapse; margin: .3rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; text-align: left;
         vertical-align: top; }
thead th { background: #f3f3f3; }
table.kv th { background: #fafafa; font-weight: 600; }
tr.pass td.verdict { color: #1e7d32; font-weight: 700; }
tr.fail td.verdict { color: #c62828; font-weight: 700; }
tr.fail td { background: #fdecea; }
.none { color: #666; font-style: italic; }
figure { margin: 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: #555; font-size: .85rem; margin-top: .2rem; }
.op-swatch { display: inline-block; width: .9em; height: .9em; margin-right: .35em;
             background: rgba(230, 155, 46, .35); border: 1px solid #a35a12;
             vertical-align: -.1em; -webkit-print-color-adjust: exact;
             print-color-adjust: exact; }
ol.events .t { display: inline-block; min-width: 4.5em; color: #a35a12;
               font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table.timeline, table.lost { font-size: .78rem; font-variant-numeric: tabular-nums; }
summary { cursor: pointer; }
footer { margin-top: 2rem; color: #777; font-size: .8rem; }
@media print {
  body { max-width: none; margin: 0; font-size: 11pt; }
  section.chart, table.kv, table.slos { break-inside: avoid; }
  .scroll { overflow: visible; }
}
"""


def _html_page(report: Mapping[str, Any], ctx: _Context, svgs: Mapping[str, str]) -> str:
    result = verdict(report)
    badge_class = {"PASS": "pass", "FAIL": "fail"}.get(result, "unknown")
    title = _text(report.get("title")) or f"{ctx.drill} drill"
    duration = _opt_num(report.get("duration_s"))
    meta = " \u00b7 ".join(
        [
            f"drill <strong>{_e(ctx.drill)}</strong>",
            f"runtime <strong>{_e(report.get('runtime'))}</strong>",
            f"started {_when(report.get('started_at'))}",
            f"finished {_when(report.get('finished_at'))}",
            f"duration {_seconds(duration)}",
        ]
    )
    description = _text(report.get("description"))
    charts = []
    for chart in CHARTS:
        charts.append(
            f'<section id="chart-{chart}" class="chart">\n'
            f"<h2>{CHART_TITLES[chart]}</h2>\n<figure>\n{svgs[chart]}\n"
            f"<figcaption>{CHART_CAPTIONS[chart]} Shaded: the operation; numbered lines: "
            f'its <a href="#events">events</a>. PNG: charts/{chart}.png</figcaption>\n'
            "</figure>\n</section>"
        )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(ctx.drill)} drill: {result} \u2014 {_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f'<h1>{_e(title)} <span class="badge {badge_class}">{result}</span></h1>',
        f'<p class="meta">{meta}</p>',
        "</header>",
        f'<p class="description">{_e(description)}</p>' if description else "",
        '<section id="parameters">\n<h2>Parameters</h2>',
        _kv_table(_mapping(report.get("params")), "parameters"),
        "</section>",
        '<section id="slo">\n<h2>SLOs</h2>',
        _slo_table(report),
        "</section>",
        '<section id="summary">\n<h2>Summary</h2>',
        _kv_table(_mapping(report.get("summary")), "summary"),
        "</section>",
        _lost_section(report),
        _cancellations_section(_mapping(report.get("summary"))),
        *charts,
        _events_section(ctx),
        '<section id="timeline">\n<h2>Raw timeline</h2>',
        _timeline_table(ctx),
        "</section>",
        f"<footer>Drill report written by meshctl drill {_e(ctx.drill)}; the data is in "
        "report.json beside this file.</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(part for part in body if part)


def _jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null, unknown objects their string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
