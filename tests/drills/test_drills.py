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
pytestmark = pytest.mark.timeout(180)


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("drills")
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
    env: dict[str, str], tmp_path: Path, name: str, duration: str, *extra: str
) -> dict[str, Any]:
    out = tmp_path / name
    done = meshctl(env, "drill", name, "--duration", duration, "--out", str(out), *extra)
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


# -- redis-crash (issue 21): last, since its run without persistence loses the shop's state --
def test_redis_crash_with_always_loses_nothing(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "redis-crash", "16s", "--persistence", "always")
    summary = report["summary"]
    assert summary["persistence"] == "always" and summary["orders_accepted"] > 30
    assert summary["orders_lost"] == 0 and report["lost"] == []
    messages = [e["message"] for e in report["operation"]["events"]]
    assert "redis killed with SIGKILL (persistence always)" in messages
    assert "redis answering again at the same address" in messages
    assert redis_persistence(platform) == "everysec", "the drill switched it back"


def test_redis_crash_without_persistence_fails_and_lists_every_lost_order(
    platform: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "redis-crash-off"
    done = meshctl(
        platform, "drill", "redis-crash", "--duration", "16s", "--persistence", "off",
        "--out", str(out),
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert done.returncode == 3 and not report["passed"], done.stderr[-2000:]
    verdicts = {s["name"]: s["passed"] for s in report["slos"]}
    assert verdicts == {
        "no order lost from before the fsync window (off)": False,
        # Redis came back empty, and yet the saga resumed by itself: the catalogue is seeded
        # again, the outbox relay makes its group again, nothing is restarted.
        "the shop accepts orders again by itself": True,
        "orders accepted after the restart all reach a final state": True,
        "no replica restarted": True,
    }, report["slos"]
    crash = next(e["t"] for e in report["operation"]["events"] if "SIGKILL" in e["message"])
    lost = report["lost"]
    assert len(lost) == report["summary"]["orders_lost"] > 0
    assert all(row["accepted_s"] <= crash + 0.5 and not row["in_window"] for row in lost)
    assert {row["why"] for row in lost} == {
        "gone: the gateway answers 404 (no such order any more)"
    }
    page = (out / "report.html").read_text()
    assert '<section id="lost">' in page and all(row["order"] in page for row in lost)
    assert redis_persistence(platform) == "everysec"


def redis_persistence(env: dict[str, str]) -> str:
    status = meshctl(env, "status", "--json")
    return str(json.loads(status.stdout)["infra"]["redis"]["persistence"])
