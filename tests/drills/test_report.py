"""The drill report writer: report.json, a self-contained report.html and the chart PNGs.

The HTML is checked by parsing it (html.parser), not by searching for substrings, so that the
charts are known to sit inside their sections and no tag or attribute loads anything.
"""

from __future__ import annotations

import json
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from loadtests.drills.report import CHARTS, EVENT_COLOR, ReportFiles, verdict, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
OPERATION = "rolling rollout orders v1 -> v2"
HOSTILE = "<script>alert('x')</script> & \"quotes\""


def rollout_report(*, failing_slo: bool = True) -> dict[str, Any]:
    """60 s of a rollout: a failure spike at 20-22 s, weights 100/0 -> 90/10 -> 0/100,
    orders v2 coming up while v1 goes down, payments lag rising and falling, and one second
    (t=25) in which no request finished."""
    timeline = []
    for t in range(1, 61):
        spike = 20 <= t <= 22
        requests = 40
        failures = 12 if spike else 0
        if t < 15:
            weights = {"orders": {"v1": 100, "v2": 0}}
        elif t < 30:
            weights = {"orders": {"v1": 90, "v2": 10}}
        else:
            weights = {"orders": {"v1": 0, "v2": 100}}
        v2 = 0 if t < 12 else 1 if t < 20 else 2
        v1 = 2 if t < 24 else 1 if t < 30 else 0
        replicas = {"orders": {"v1": v1, "v2": v2}, "inventory": {"v1": 1}}
        if v1 == 0:
            del replicas["orders"]["v1"]  # a version with no replica left is not listed
        lag = max(0, 40 - abs(t - 25) * 4) if 15 <= t <= 35 else 0
        no_latency = t == 25
        timeline.append(
            {
                "t": float(t),
                "users": 8,
                "rps": 0.0 if no_latency else float(requests),
                "requests": 0 if no_latency else requests,
                "failures": 0 if no_latency else failures,
                "error_rate": 0.0 if no_latency else failures / requests,
                "p50_ms": None if no_latency else 12.0 + (200.0 if spike else 0.0),
                "p95_ms": None if no_latency else 30.0 + (900.0 if spike else 0.0),
                "p99_ms": None if no_latency else 41.0 + (1500.0 if spike else 0.0),
                "max_ms": None if no_latency else 60.0,
                "replicas": replicas,
                "healthy": {"orders": v1 + v2, "inventory": 1},
                "weights": weights,
                "lag": {"payments": lag, "inventory": 3, "notifications": None},
            }
        )
    events = [
        {"t": 12.3, "message": "orders v2 replica 1/2 ready"},
        {"t": 12.6, "message": "weights orders v1=90 v2=10"},
        {"t": 12.9, "message": "orders v2 replica 2/2 starting"},
        {"t": 13.1, "message": "canary check <ok>"},
        {"t": 20.1, "message": "orders v2 replica 2/2 ready"},
        {"t": 24.0, "message": "orders v1 replica 1 drained"},
        {"t": 30.0, "message": "weights orders v1=0 v2=100"},
        {"t": 30.4, "message": "orders v1 replica 2 drained"},
    ]
    slos = [
        {
            "name": "no failed requests",
            "threshold": "0",
            "measured": "36 of 2360",
            "passed": not failing_slo,
            "detail": "failures at 20-22 s",
        },
        {
            "name": "p99 under 500 ms",
            "threshold": "500 ms",
            "measured": "1541 ms",
            "passed": True,
            "detail": "",
        },
    ]
    return {
        "drill": "rolling",
        "runtime": "local",
        "title": "Rolling update of orders v1 -> v2",
        "description": f"Rolls orders from v1 to v2 under load. {HOSTILE}",
        "started_at": 1764000000.0,
        "finished_at": 1764000061.5,
        "duration_s": 61.5,
        "params": {
            "service": "orders",
            "version": "v2",
            "load": "open loop, 40 arrivals/s",
            "surge": 1,
            "<b>bold</b>": "<i>x</i>",
        },
        "operation": {"name": OPERATION, "start": 12.0, "end": 30.5, "events": events},
        "phases": [
            {"name": "baseline", "start": 2.0, "end": 12.0},
            {"name": "operation", "start": 12.0, "end": 30.5},
            {"name": "recovery", "start": 30.5, "end": 60.0},
        ],
        "timeline": timeline,
        "summary": {
            "requests": 2360,
            "failures": 36,
            "error_rate": 0.0153,
            "p99_ms": 1541.0,
            "orders_accepted": 400,
            "orders_cancelled": 16,
            "cancelled_by_reason": {"payment_failed": 12, "out_of_stock": 4},
        },
        "slos": slos,
        "passed": not failing_slo,
    }


class Page(HTMLParser):
    """What the tests need from the page: tags, attributes, text per chart SVG, the badge."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starttags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.sections: list[str] = []
        self.svg_count: dict[str, int] = {}
        self.svg_text: dict[str, list[str]] = {}
        # Every <text> element of each chart SVG: its attributes and its text.
        self.svg_elements: dict[str, list[tuple[dict[str, str | None], str]]] = {}
        self.style_text: list[str] = []
        self.text: list[str] = []
        self.badge: list[str] = []
        self._section: str | None = None
        self._svg_depth = 0
        self._badge_depth = 0
        self._in_style = False
        self._text_element: tuple[dict[str, str | None], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        attributes = dict(attrs)
        self.starttags.append((tag, attributes))
        if attributes.get("id"):
            self.ids.append(str(attributes["id"]))
        if tag == "section":
            self._section = attributes.get("id")
            if self._section:
                self.sections.append(self._section)
        if tag == "svg" and self._section:
            self.svg_count[self._section] = self.svg_count.get(self._section, 0) + 1
        if tag == "svg" and not closed:
            self._svg_depth += 1
        if tag == "span" and "badge" in (attributes.get("class") or "").split():
            self._badge_depth = 1
        if tag == "style":
            self._in_style = True
        if tag == "text" and self._svg_depth and not closed:
            self._text_element = (attributes, [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        if tag == "svg":
            self._svg_depth -= 1
        if tag == "span":
            self._badge_depth = 0
        if tag == "style":
            self._in_style = False
        if tag == "text" and self._text_element and self._section:
            attributes, chunks = self._text_element
            self.svg_elements.setdefault(self._section, []).append((attributes, "".join(chunks)))
            self._text_element = None

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style_text.append(data)
            return
        self.text.append(data)
        if self._svg_depth and self._section:
            self.svg_text.setdefault(self._section, []).append(data)
        if self._badge_depth:
            self.badge.append(data)
        if self._text_element:
            self._text_element[1].append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def event_labels(page: Page, chart: str) -> list[tuple[float, float, float, str]]:
    """The event number labels of one chart: x, y, font size and text, left to right."""
    found = []
    for attrs, text in page.svg_elements[f"chart-{chart}"]:
        style = attrs.get("style") or ""
        if EVENT_COLOR not in style or not label_numbers(text):
            continue
        size = float(style.split("font-size:")[1].split("px")[0])
        found.append((float(str(attrs["x"])), float(str(attrs["y"])), size, text))
    return sorted(found)


def label_numbers(text: str) -> list[int]:
    """ "3" -> [3]; "3,4" -> [3, 4]; "3\u20136" -> [3, 4, 5, 6]; anything else -> []."""
    if "\u2013" in text:
        first, _, last = text.partition("\u2013")
        if first.isdigit() and last.isdigit():
            return list(range(int(first), int(last) + 1))
        return []
    parts = text.split(",")
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else []


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    # The first chunk of a PNG is IHDR: length, type, then width and height.
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ReportFiles, float]:
    report = rollout_report()
    folder = tmp_path_factory.mktemp("drill") / "rolling-report"
    # CPU time, not wall time: the suite shares the machine with platform processes.
    started = time.process_time()
    files = write_report(report, folder)
    return report, files, time.process_time() - started


def test_writes_every_file_into_the_folder(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    folder = files.html.parent
    assert files.json == folder / "report.json"
    assert files.html == folder / "report.html"
    assert set(files.pngs) == set(CHARTS)
    for chart, path in files.pngs.items():
        assert path == folder / "charts" / f"{chart}.png"


def test_renders_fast(rollout: tuple[dict[str, Any], ReportFiles, float]):
    *_, elapsed = rollout
    assert elapsed < 5.0, f"six charts for 60 s took {elapsed:.2f} s of CPU"


def test_json_round_trips(rollout: tuple[dict[str, Any], ReportFiles, float]):
    report, files, _ = rollout
    text = files.json.read_text(encoding="utf-8")
    assert "\n  " in text, "report.json is indented"
    assert json.loads(text) == report


def test_every_chart_has_a_section_with_an_inline_svg(
    rollout: tuple[dict[str, Any], ReportFiles, float],
):
    _, files, _ = rollout
    page = parse(files.html)
    for chart in CHARTS:
        assert f"chart-{chart}" in page.sections, f"no section for {chart}"
        assert page.svg_count.get(f"chart-{chart}") == 1, f"no inline svg for {chart}"
    headings = [t for t, _ in page.starttags if t == "h2"]
    assert len(headings) >= len(CHARTS)
    # Six SVGs in one document: matplotlib's ids (figure_1, clip paths) must not collide.
    duplicates = {i for i in page.ids if page.ids.count(i) > 1}
    assert not duplicates, f"duplicate ids: {sorted(duplicates)[:5]}"


def test_operation_and_events_are_marked_on_every_chart(
    rollout: tuple[dict[str, Any], ReportFiles, float],
):
    report, files, _ = rollout
    page = parse(files.html)
    throughput = "".join(page.svg_text["chart-throughput"])
    assert OPERATION in throughput
    for chart in CHARTS:
        text = page.svg_text[f"chart-{chart}"]
        assert OPERATION in "".join(text), f"operation not named on {chart}"
        # Events 1-4 fall within 1 s: they stagger or share a label, but every number is drawn
        # and no two labels on one row overlap (DejaVu Sans digits are 0.64 em wide).
        labels = event_labels(page, chart)
        drawn = {n for _, _, _, text in labels for n in label_numbers(text)}
        assert drawn == set(range(1, len(report["operation"]["events"]) + 1)), chart
        for i, (x1, y1, size1, text1) in enumerate(labels):
            for x2, y2, _, _ in labels[i + 1 :]:
                if abs(y1 - y2) < size1 and x1 <= x2:
                    assert x2 - x1 >= 0.64 * size1 * len(text1), f"{text1} overlaps on {chart}"
        assert "baseline" in text, f"phase not named on {chart}"
    events = report["operation"]["events"]
    items = [a for t, a in page.starttags if t == "li" and a.get("value")]
    assert [int(str(a["value"])) for a in items] == list(range(1, len(events) + 1))
    assert "canary check <ok>" in "".join(page.text)


def test_weights_and_latency_charts(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    weights = "".join(page.svg_text["chart-weights"])
    assert "orders v1" in weights and "orders v2" in weights
    assert "no weights set" not in weights
    latency = "".join(page.svg_text["chart-latency"])
    assert "log scale" in latency, "41 ms to 1541 ms is a wide range"
    lag = "".join(page.svg_text["chart-lag"])
    assert "payments" in lag and "inventory" in lag


def test_verdict_badge(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    assert "".join(page.badge).strip() == "FAIL"
    badges = [a for t, a in page.starttags if "badge" in (a.get("class") or "").split()]
    assert [a["class"] for a in badges] == ["badge fail"]


def test_verdict_rule():
    assert verdict(rollout_report(failing_slo=False)) == "PASS"
    assert verdict(rollout_report(failing_slo=True)) == "FAIL"
    # An SLO that failed wins over a "passed" the engine got wrong.
    assert verdict(rollout_report(failing_slo=True) | {"passed": True}) == "FAIL"
    assert verdict({"passed": False, "slos": []}) == "FAIL"
    assert verdict({"slos": [{"passed": True}]}) == "PASS"
    assert verdict({"slos": [{"passed": True}, {"passed": None}]}) == "NO VERDICT"
    assert verdict({}) == "NO VERDICT"


def test_loads_nothing_from_outside(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    tags = [t for t, _ in page.starttags]
    assert "script" not in tags
    assert "link" not in tags
    assert "iframe" not in tags and "img" not in tags
    for tag, attrs in page.starttags:
        for name, value in attrs.items():
            if name == "xmlns" or name.startswith("xmlns:"):
                continue  # namespace names are identifiers, never fetched
            assert "://" not in (value or ""), f"<{tag} {name}={value!r}>"
            if name in ("href", "src", "xlink:href"):
                assert (value or "").startswith("#"), f"<{tag} {name}={value!r}>"
    style = "".join(page.style_text)
    assert "@import" not in style and "url(" not in style


def test_strings_from_the_data_are_escaped(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    text = "".join(page.text)
    assert HOSTILE in text, "the description is shown as text"
    assert "<b>bold</b>" in text and "<i>x</i>" in text
    tags = {t for t, _ in page.starttags}
    assert "b" not in tags and "i" not in tags
    raw = files.html.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert" in raw


def test_pngs_are_pngs_of_a_sensible_size(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    sizes = {chart: png_size(path) for chart, path in files.pngs.items()}
    for chart, (width, height) in sizes.items():
        assert 800 <= width <= 2400, f"{chart}: {width}x{height}"
        assert 250 <= height <= 1200, f"{chart}: {width}x{height}"
    # One time axis: every chart has the same width.
    assert len({w for w, _ in sizes.values()}) == 1


def test_slo_and_parameter_tables(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    text = "".join(page.text)
    for needle in ("no failed requests", "36 of 2360", "failures at 20-22 s", "500 ms"):
        assert needle in text
    assert "open loop, 40 arrivals/s" in text
    rows = [a for t, a in page.starttags if t == "tr" and a.get("class") in ("pass", "fail")]
    assert [a["class"] for a in rows] == ["fail", "pass"]
    assert any(t == "details" for t, _ in page.starttags), "raw timeline is collapsible"


def test_cancelled_orders_by_reason(rollout: tuple[dict[str, Any], ReportFiles, float]):
    _, files, _ = rollout
    page = parse(files.html)
    assert "cancellations" in page.sections
    cells = [t.strip() for t in page.text if t.strip()]
    start = cells.index("Cancelled orders by reason")
    assert cells[start + 1 : start + 10] == [
        "reason",
        "orders",
        "share of accepted orders",
        "payment_failed",
        "12",
        "3.0%",
        "out_of_stock",
        "4",
        "1.0%",
    ]


def test_empty_timeline_and_open_operation(tmp_path: Path):
    report: dict[str, Any] = {
        "drill": "kill",
        "operation": {"name": "kill orders replica 1", "start": 5.0, "end": None, "events": []},
        "timeline": [],
        "slos": [],
        "passed": None,
    }
    files = write_report(report, tmp_path / "empty")
    assert json.loads(files.json.read_text(encoding="utf-8")) == report
    for chart in CHARTS:
        png_size(files.pngs[chart])
    page = parse(files.html)
    for chart in CHARTS:
        assert page.svg_count.get(f"chart-{chart}") == 1
        assert "kill orders replica 1" in "".join(page.svg_text[f"chart-{chart}"])
    assert "no weights set" in "".join(page.svg_text["chart-weights"])
    assert "".join(page.badge).strip() == "NO VERDICT"
    assert "not recorded" in "".join(page.text)
    assert "No accepted order was cancelled." in page.text


def test_minimal_report_and_odd_values(tmp_path: Path):
    """Missing keys, None everywhere, a '$' (mathtext) and a leading '_' in names."""
    report: dict[str, Any] = {
        "operation": None,
        "timeline": [
            {"t": 1.0, "rps": None, "replicas": None, "weights": None, "lag": None},
            {"t": 2.0, "rps": 3, "replicas": {"_svc": 2}, "weights": {"a$b": {"v$1": 1}}},
            {"t": None},
            "not a row",
        ],
        "summary": None,
        "params": {"cost": "$5", "n": float("nan")},
    }
    files = write_report(report, tmp_path / "min")
    page = parse(files.html)
    assert set(page.svg_count) >= {f"chart-{c}" for c in CHARTS}
    assert "a$b v$1" in "".join(page.svg_text["chart-weights"])
    assert "_svc" in "".join(page.svg_text["chart-replicas"])
    saved = json.loads(files.json.read_text(encoding="utf-8"))
    assert saved["params"]["n"] is None, "NaN is not JSON"


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")
def test_renders_in_headless_chromium(
    rollout: tuple[dict[str, Any], ReportFiles, float], tmp_path: Path
):
    _, files, _ = rollout
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        files.html.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists(), result.stderr[-2000:]
    assert png_size(shot) == (1200, 3000)
