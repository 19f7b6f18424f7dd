"""``make bench``'s report on its own: figures files in, page, charts, figures.json and one
verdict line per target out; a benchmark without figures is "not measured", never a pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests import bench_report

MACHINE = {"cpus": 2, "cpu_model": "Test CPU", "load_average_1m": 0.4, "loaded": False}


def curve(peak: float, knee: float | None) -> dict[str, Any]:
    steps = [
        {"offered": peak * s, "achieved": min(peak * s, peak), "p50_ms": 0.5 + s, "p99_ms": 2 + s}
        for s in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.1, 1.2)
    ]
    return {"peak_rps": peak, "steps": steps, "knee_rps": knee}


def gateway_figures(ratio: float) -> dict[str, Any]:
    return {
        "machine": MACHINE,
        "measured_at": "2026-12-02T10:00:00+00:00",
        "results": [
            {"label": "gateway", "rps": 20000.0, "p50_ms": 1.0, "p99_ms": 3.0, "cpu_us": 40}
        ],
        "latency_vs_load": {"gateway": curve(20000, 20000), "nginx": curve(25000, 25000)},
        "targets": {
            "like_for_like": {
                "name": "gateway like for like >= 0.8 x nginx",
                "value": ratio,
                "met": ratio >= 0.8,
                "figure": f"{ratio:.2f} x",
            }
        },
    }


def states(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """Target -> MET / MISSED / not measured, after checking each is printed on a line."""
    checks = bench_report.verdicts(bench_report.load(folder))
    out = capsys.readouterr().out
    for name, _, state in checks:
        assert any(line.startswith(name) and f"  {state}  " in line for line in out.splitlines())
    return {name: state for name, _, state in checks}


def figure_of(folder: Path, target: str) -> str:
    return {n: f for n, f, _ in bench_report.verdicts(bench_report.load(folder))}[target]


def test_gateway_only_draws_its_chart_and_says_the_saga_is_not_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gateway.json").write_text(json.dumps(gateway_figures(0.83)))
    assert bench_report.write(tmp_path) == 0
    verdicts = states(tmp_path, capsys)
    assert verdicts["gateway like for like >= 0.8 x nginx"] == "MET"
    assert verdicts["gateway and nginx latency vs load, 10%-120% of peak, >= 8 steps"] == "MET"
    assert verdicts["saga and its curves"] == "not measured"
    assert verdicts["platform memory (make bench-memory)"] == "not measured"
    assert (tmp_path / "latency-vs-load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "saga-replicas.png").exists()
    assert json.loads((tmp_path / "figures.json").read_text())["gateway"]["targets"]
    page = (tmp_path / "index.html").read_text()
    assert "<img src='latency-vs-load.png'" in page and "2026-12-02 on 2 x Test CPU" in page


def test_a_missed_target_and_a_short_curve_are_missed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = gateway_figures(0.61)
    figures["latency_vs_load"]["nginx"]["steps"] = figures["latency_vs_load"]["nginx"]["steps"][:5]
    (tmp_path / "gateway.json").write_text(json.dumps(figures))
    bench_report.write(tmp_path)
    verdicts = states(tmp_path, capsys)
    assert verdicts["gateway like for like >= 0.8 x nginx"] == "MISSED"
    assert verdicts["gateway and nginx latency vs load, 10%-120% of peak, >= 8 steps"] == "MISSED"


def test_the_saga_figures_give_their_own_verdicts_curve_and_replicas_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = {
        "machine": MACHINE,
        "measured_at": "2026-12-02T11:00:00+00:00",
        "latency_vs_load": curve(640, 600),
        "replicas": [
            {"replicas": 1, "steady_rps": 610.0, "cpu_per_order_ms": 2.1},
            {"replicas": 2, "steady_rps": 650.0, "cpu_per_order_ms": 2.4},
        ],
        "targets": {"600 orders/s": {"met": True, "value": 612}, "RSS idle < 450 MB": False},
    }
    (tmp_path / "saga.json").write_text(json.dumps(saga))
    bench_report.write(tmp_path)
    verdicts = states(tmp_path, capsys)
    assert verdicts["saga: 600 orders/s"] == "MET"
    assert verdicts["saga: RSS idle < 450 MB"] == "MISSED"
    assert verdicts["saga POST->terminal latency vs load, knee marked"] == "MET"
    assert verdicts["saga throughput with 1 and 2 replicas"] == "MET"
    assert figure_of(tmp_path, "saga throughput with 1 and 2 replicas") == "1: 610/s, 2: 650/s"
    assert verdicts["gateway (make bench-gateway)"] == "not measured"
    assert (tmp_path / "saga-replicas.png").exists() and (tmp_path / "latency-vs-load.png").exists()


def test_the_memory_figures_give_a_verdict_per_target_and_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = {
        "machine": MACHINE,
        "measured_at": "2026-12-02T12:00:00+00:00",
        "idle": {"gateway": 80.0, "redis": 7.5},
        "load": {"gateway": 90.0, "redis": 30.0},
        "idle_rss_mb": 87.5,
        "idle_pss_mb": 60.0,
        "load_rss_mb": 120.0,
        "load_pss_mb": 90.0,
        "targets": {
            "idle": {"name": "platform RSS idle < 450 MB", "met": True, "figure": "88 MB"},
            "load": {"name": "platform RSS at the saga load < 600 MB", "met": False, "figure": "x"},
        },
    }
    (tmp_path / "memory.json").write_text(json.dumps(memory))
    bench_report.write(tmp_path)
    verdicts = states(tmp_path, capsys)
    assert verdicts["platform RSS idle < 450 MB"] == "MET"
    assert verdicts["platform RSS at the saga load < 600 MB"] == "MISSED"
    page = (tmp_path / "index.html").read_text()
    assert "<td>gateway</td><td>80.0</td><td>90.0</td>" in page and "total PSS" in page


def test_publish_puts_the_chart_and_its_machine_in_the_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gateway.json").write_text(json.dumps(gateway_figures(0.83)))
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\n{bench_report.README_START}\nold\n{bench_report.README_END}\n\nrest\n"
    )
    monkeypatch.setattr(bench_report, "README", readme)
    monkeypatch.setattr(bench_report, "DOCS", tmp_path / "docs")
    assert bench_report.write(tmp_path, publish=True) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith("\n\nrest\n")
    assert f"]({tmp_path / 'docs' / 'latency-vs-load.png'})" in text
    assert "Gateway and nginx measured 2026-12-02 on 2 x Test CPU" in text
    assert (tmp_path / "docs" / "latency-vs-load.png").exists()
    readme.write_text("# no markers\n")
    assert bench_report.write(tmp_path, publish=True) == 1
