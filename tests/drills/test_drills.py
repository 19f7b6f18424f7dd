"""Every drill, in its short form, on the local runtime: the real ``meshctl drill`` command
runs the real Locust CLI against the real platform (gateway, four services, tansu, valkey,
the registry, all processes on loopback), performs its operation, and its report passes
its SLOs. The one part that is not real Consul is the development registry (no Consul
binary installs here); everything else is the real thing.

The drills share one platform, in the order a user would rehearse them; each one brings the
platform to its own starting point first (replicas, autoscaler), so the order only matters
for speed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from drill_support import local_platform, meshctl

CHARTS = ("throughput", "latency", "errors", "replicas", "weights", "lag")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from local_platform(tmp_path_factory, "drills")


class ChartSections(HTMLParser):
    """Which chart sections hold an inline SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.with_svg: set[str] = set()
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id") or ""
        if tag == "section" and ident.startswith("chart-"):
            self.current = ident.removeprefix("chart-")
        elif tag == "svg" and self.current:
            self.with_svg.add(self.current)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None


def run_drill(env: dict[str, str], tmp_path: Path, name: str, duration: str) -> dict[str, Any]:
    out = tmp_path / name
    done = meshctl(env, "drill", name, "--duration", duration, "--out", str(out))
    report_file = out / "report.json"
    assert report_file.exists(), f"no report: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_file.read_text())
    failed = [s for s in report["slos"] if not s["passed"]]
    assert done.returncode == 0 and report["passed"], f"{failed}\n{done.stderr[-3000:]}"
    # The report: a timeline of the whole load, the operation marked, every chart drawn.
    assert len(report["timeline"]) >= float(duration.rstrip("s")) - 3
    assert report["operation"]["start"] is not None and report["operation"]["events"]
    parser = ChartSections()
    parser.feed((out / "report.html").read_text())
    assert parser.with_svg == set(CHARTS)
    for chart in CHARTS:
        png = out / "charts" / f"{chart}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return report


def slo(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["slos"] if s["name"] == name)


def test_rolling(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "rolling", "35s")
    assert slo(report, "no failed requests")["measured"].startswith("0 of ")
    assert report["summary"]["requests"] > 300


def test_bluegreen(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "bluegreen", "35s")
    weights = [row["weights"].get("orders") for row in report["timeline"]]
    assert any(w and 0 in w.values() for w in weights), "the switch is visible in the weights"


def test_canary(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "canary", "40s")
    assert "pass" in slo(report, "every analysis passed")["measured"]


def test_canary_bad(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "canary-bad", "35s")
    assert slo(report, "rolled back automatically")["measured"] == "aborted"


def test_kill_replica(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "kill-replica", "30s")
    assert report["summary"]["orders_accepted"] > 50
    assert report["summary"]["orders_lost"] == 0


def test_broker_restart(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "broker-restart", "35s")
    assert report["summary"]["orders_lost"] == 0
    messages = [e["message"] for e in report["operation"]["events"]]
    assert "kafka stopped" in messages and "kafka answering again" in messages


def test_autoscale(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "autoscale", "40s")
    replicas = [sum(row["replicas"].get("orders", {}).values()) for row in report["timeline"]]
    assert min(replicas) == 1 and max(replicas) > 1


def test_unknown_drill_is_one_clear_line(platform: dict[str, str]) -> None:
    done = meshctl(platform, "drill", "chaos-monkey")
    assert done.returncode == 1
    assert "no drill 'chaos-monkey'" in done.stderr and "rolling" in done.stderr
