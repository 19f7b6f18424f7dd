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
from pathlib import Path

import pytest
from drill_support import local_platform, meshctl, run_drill, slo

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from local_platform(tmp_path_factory, "drills")


def test_rolling(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "rolling", "35s")
    assert slo(report, "no failed requests")["measured"].startswith("0 of ")
    assert report["summary"]["requests"] > 300


def test_bluegreen(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "bluegreen", "35s")
    weights = [row["weights"].get("orders") for row in report["timeline"]]
    assert any(w and 0 in w.values() for w in weights), "the switch is visible in the weights"


def test_canary(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "canary", "45s")
    assert "pass" in slo(report, "every step's analysis passed, none failed")["measured"]


def test_canary_bad(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "canary-bad", "35s")
    assert slo(report, "rolled back automatically")["measured"] == "aborted"


def test_kill_replica(platform: dict[str, str], tmp_path: Path) -> None:
    report = run_drill(platform, tmp_path, "kill-replica", "30s")
    assert report["summary"]["orders_accepted"] > 50
    assert report["summary"]["orders_lost"] == 0


def test_broker_restart(platform: dict[str, str], tmp_path: Path) -> None:
    # A tenth of the orders come from customers payments declines: the report counts the
    # cancelled ones by reason (the audit reads each order's reason from the gateway).
    declining = {**platform, "LOAD_DECLINE_SHARE": "0.1"}
    report = run_drill(declining, tmp_path, "broker-restart", "35s")
    summary = report["summary"]
    assert summary["orders_lost"] == 0
    reasons = summary["cancelled_by_reason"]
    assert reasons.get("payment_failed", 0) > 0, summary
    assert sum(reasons.values()) == summary["orders_cancelled"], summary
    page = (tmp_path / "broker-restart" / "report.html").read_text()
    assert '<section id="cancellations">' in page and "<td>payment_failed</td>" in page
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
