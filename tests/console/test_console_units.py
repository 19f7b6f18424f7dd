"""The console's parts that need no platform: the shipped assets, the load recipe, the
collector's frame from given readings (a replica restart included), sessions and CSRF."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from infra.console import collector as collector_module
from infra.console.collector import Collector
from infra.console.sources import Reading
from infra.local import promtext
from infra.runtime.models import GatewayInfo, Overview, ReplicaInfo, ServiceStatus
from loadtests import launch

STATIC = Path(collector_module.__file__).resolve().parent / "static"


def test_vendored_assets_are_the_recorded_release() -> None:
    """uPlot ships in the package (no CDN); its files are the release named in VENDOR.json."""
    manifest = json.loads((STATIC / "vendor" / "VENDOR.json").read_text())
    for name, entry in manifest.items():
        for file, digest in entry["files"].items():
            data = (STATIC / "vendor" / name / file).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, f"{name}/{file} changed"


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for file in ("index.html", "console.js", "console.css"):
        text = (STATIC / file).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text, file


def test_the_load_recipe_builds_locust_command_lines() -> None:
    closed, env = launch.locust_command(
        launch.LoadRequest(users=7, spawn_rate=3, duration=30), "http://127.0.0.1:1", "key", {}
    )
    assert closed[closed.index("-u") + 1] == "7" and closed[closed.index("-t") + 1] == "30s"
    assert env["LOAD_MODE"] == "closed" and env["MESH_API_KEY"] == "key"
    shaped, env = launch.locust_command(
        launch.LoadRequest(mode="open", users=4, arrivals=2.5, shape="spike", duration=90),
        "http://127.0.0.1:1",
        "key",
        {},
    )
    assert "-u" not in shaped and env["LOAD_SHAPE"] == "spike" and env["LOAD_USERS"] == "4"
    assert env["LOAD_USER_RATE"] == "2.5" and env["LOAD_DURATION"] == "90s"
    with pytest.raises(launch.LoadError, match="shape must be one of"):
        launch.locust_command(launch.LoadRequest(shape="wave"), "http://x", "k", {})


class _Runtime:
    name = "local"


def _overview(port: int) -> Overview:
    return Overview(
        runtime="local",
        gateway=GatewayInfo(url="http://127.0.0.1:1", api_key="k", healthy=True),
        services=[
            ServiceStatus(name="orders", replicas=1, healthy=1, versions={"v1": 1}, stable="v1")
        ],
        replicas=[
            ReplicaInfo(
                id="gateway-127.0.0.1-1",
                service="gateway",
                version="v1",
                address="127.0.0.1:1",
                state="ready",
            ),
            ReplicaInfo(
                id=f"orders-127.0.0.1-{port}",
                service="orders",
                version="v1",
                address=f"127.0.0.1:{port}",
                state="ready",
            ),
        ],
    )


def _gateway_scrape(ok: float, failed: float, started: float) -> list[promtext.Sample]:
    labels = {"route": "/api/orders", "upstream": "orders", "upstream_version": "v1"}
    samples = [
        promtext.Sample("process_start_time_seconds", {}, started),
        promtext.Sample("gateway_requests_total", {**labels, "status": "202"}, ok),
        promtext.Sample("gateway_requests_total", {**labels, "status": "500"}, failed),
    ]
    for bound, share in ((0.01, 0.5), (0.1, 0.9), (math.inf, 1.0)):
        samples.append(
            promtext.Sample(
                "gateway_request_duration_seconds_bucket",
                {**labels, "le": str(bound)},
                (ok + failed) * share,
            )
        )
    return samples


def _tick(collector: Collector, now: float, ok: float, failed: float, started: float = 1.0) -> dict:
    overview = _overview(7000)
    scraped = overview.replicas
    scrapes = [Reading(True, _gateway_scrape(ok, failed, started)), Reading(True, [])]
    missing = Reading(False, error="not in this test")
    return collector.build(
        now, Reading(True, overview), {}, scraped, scrapes, missing, missing, missing
    )


def test_a_frame_from_readings_and_a_gateway_restart(tmp_path: Path) -> None:
    collector = Collector(_Runtime(), tmp_path)  # type: ignore[arg-type]
    _tick(collector, 100.0, 1000, 0)  # running before the console: a baseline
    frame = _tick(collector, 101.0, 1018, 2)  # 20 answered in one second, 2 of them 500s
    edge = next(e for e in frame["edges"] if e["id"] == "gateway>orders")
    assert edge["stats"]["10s"]["requests"] == 20 and edge["stats"]["10s"]["errors"] == 2
    assert edge["health"]["10s"] == "degraded"  # 10% of 5xx: degraded, not yet failing
    # The gateway restarts: its counters start again, at 5 answered and 5 failed since (the
    # 500s' counter ends above where it was: only the new start time tells the restart).
    frame = _tick(collector, 102.0, 5, 5, started=101.5)
    edge = next(e for e in frame["edges"] if e["id"] == "gateway>orders")
    stats = edge["stats"]["10s"]
    assert stats["requests"] == 30 and stats["errors"] == 7
    assert stats["rps"] == 15.0  # 30 over the two seconds measured
    assert edge["health"]["10s"] == "failing"  # 7 of 30 is above 10%
    version = frame["services"][0]["versions"][0]
    assert version["version"] == "v1" and version["share"]["10s"] == 100.0
    assert frame["tick"]["e"]["gateway>orders"][0] == 15.0
    assert frame["sources"]["kafka"]["ok"] is False
