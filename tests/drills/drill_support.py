"""What the drill and lesson tests share (local and compose): run ``meshctl drill`` as a user
would and check its report (passed, a timeline of the whole load, the operation marked, every
chart), a local platform of their own, and an outline of a report page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from infra.process import free_port

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
CHARTS = ("throughput", "latency", "errors", "replicas", "weights", "lag")


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def record(report: dict[str, Any]) -> None:
    """With MESH_DRILL_FIGURES=path: one JSON line per drill (runtime, figures, SLO verdicts),
    so runs on several runtimes can be put side by side."""
    path = os.environ.get("MESH_DRILL_FIGURES")
    if not path:
        return
    line = {
        "runtime": report["runtime"],
        "drill": report["drill"],
        "passed": report["passed"],
        "duration_s": report["duration_s"],
        "summary": report["summary"],
        "slos": [{k: s[k] for k in ("name", "measured", "passed")} for s in report["slos"]],
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


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


def run_drill(
    env: dict[str, str],
    tmp_path: Path,
    name: str,
    duration: str,
    *extra: str,
    timeout: float = 150,
) -> dict[str, Any]:
    out = tmp_path / name
    argv = ["drill", name, "--duration", duration, "--out", str(out), *extra]
    done = meshctl(env, *argv, timeout=timeout)
    report_file = out / "report.json"
    assert report_file.exists(), f"no report: {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(report_file.read_text())
    record(report)
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


def local_platform(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[dict[str, str]]:
    """``meshctl up`` in a state folder of its own on a free gateway port; down at the end."""
    home = tmp_path_factory.mktemp(name)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")
    }
    env.update(MESH_HOME=str(home), GATEWAY_PORT=str(free_port()), RUNTIME="local")
    up = meshctl(env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    yield env
    meshctl(env, "down")


class Outline(HTMLParser):
    """The ids of a page's sections and paragraphs, in order, and how many SVGs it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident and tag in ("section", "p"):
            self.ids.append(ident)
        self.svgs += tag == "svg"
