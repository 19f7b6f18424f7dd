"""Units of the local runtime: canary analysis from two scrapes, the catalogue, version
files, the trace tree and interleaved replica logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local import promtext
from infra.local.catalog import CatalogError, load_platform
from infra.local.rollouts.analysis import analyse, increase, version_traffic
from infra.local.versions import VersionError, parse_env_file, version_env
from infra.meshctl.logs import interleave, replica_logs
from infra.meshctl.trace import find_traces, render
from infra.runtime.models import RolloutSpec

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def gateway_text(version: str, ok: int, errors: int, latencies: dict[float, int]) -> str:
    """A gateway scrape: counters by status and a cumulative latency histogram."""
    labels = f'route="/api/web",upstream="web",upstream_version="{version}"'
    lines = [
        "# TYPE gateway_requests_total counter",
        f'gateway_requests_total{{{labels},status="200"}} {ok}',
        f'gateway_requests_total{{{labels},status="500"}} {errors}',
        "# TYPE gateway_request_duration_seconds histogram",
    ]
    total = 0
    for bound in BUCKETS:
        total += latencies.get(bound, 0)
        lines.append(f'gateway_request_duration_seconds_bucket{{{labels},le="{bound}"}} {total}')
    lines.append(f'gateway_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}')
    lines.append(f"gateway_request_duration_seconds_count{{{labels}}} {total}")
    lines.append(f"gateway_request_duration_seconds_sum{{{labels}}} 1.0")
    return "\n".join(lines) + "\n"


def test_quantile_interpolates_within_the_bucket() -> None:
    assert promtext.quantile(0.5, {0.1: 50, 0.2: 100, float("inf"): 100}) == pytest.approx(0.1)
    assert promtext.quantile(0.99, {0.1: 0, 0.2: 100, float("inf"): 100}) == pytest.approx(0.199)
    assert promtext.quantile(0.99, {0.1: 0, float("inf"): 0}) is None
    assert promtext.quantile(0.99, {0.1: 10, float("inf"): 20}) == 0.1  # past the last bound
    assert promtext.delta(5, 8) == 5  # a counter reset counts from zero


def test_analysis_judges_only_the_interval() -> None:
    spec = RolloutSpec(service="web", version="v2", max_error_rate=0.05, max_p99=0.2)
    before = version_traffic(gateway_text("v2", 1000, 500, {0.01: 1500}), "web", "v2")
    good = version_traffic(gateway_text("v2", 1100, 501, {0.01: 1601}), "web", "v2")
    result = analyse(increase(good, before), spec, 0, 10)
    assert (result.verdict, result.requests, result.errors) == ("pass", 101, 1)
    assert result.p99_ms is not None and result.p99_ms <= 10
    bad = version_traffic(gateway_text("v2", 1070, 530, {0.01: 1600}), "web", "v2")
    failed = analyse(increase(bad, before), spec, 0, 10)
    assert failed.verdict == "fail" and "error rate 30.0% > 5.0%" in failed.reason
    slow = version_traffic(gateway_text("v2", 1100, 500, {0.01: 1500, 0.5: 100}), "web", "v2")
    late = analyse(increase(slow, before), spec, 0, 10)
    assert late.verdict == "fail" and "p99" in late.reason and late.error_rate == 0
    quiet = analyse(increase(before, before), spec, 0, 10)
    assert quiet.verdict == "inconclusive"
    other = version_traffic(gateway_text("v1", 5, 0, {}), "web", "v2")
    assert other.requests == 0


def test_the_shipped_catalogue_loads() -> None:
    platform = load_platform()
    assert platform.gateway.name == "gateway"
    assert [s.name for s in platform.services] == [
        "orders",
        "inventory",
        "payments",
        "notifications",
    ]
    assert platform.get("payments").partitions() == 3
    assert platform.versions_dir.name == "versions"


def test_a_bad_catalogue_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "platform.toml"
    web = '[[service]]\nname = "web"\nmodule = "x"\n'
    path.write_text(web)
    with pytest.raises(CatalogError, match="exactly one service of kind gateway"):
        load_platform(path)
    autoscale = '[service.autoscale]\nmin = 3\nmax = 2\nmetrics = [{type = "cpu", target = 50}]\n'
    path.write_text('[[service]]\nname = "gw"\nkind = "gateway"\nmodule = "g"\n' + web + autoscale)
    with pytest.raises(CatalogError) as caught:
        load_platform(path)
    assert "\n" not in str(caught.value) and "min (3) is above max (2)" in str(caught.value)
    with pytest.raises(CatalogError, match="cannot read the catalogue"):
        load_platform(tmp_path / "missing.toml")


def test_version_files(tmp_path: Path) -> None:
    (tmp_path / "web-v3.env").write_text("# faulty\nFAKE_ERROR_RATE=0.3\nexport NAME='a b'\n\n")
    assert version_env(tmp_path, "web", "v3") == {"FAKE_ERROR_RATE": "0.3", "NAME": "a b"}
    assert version_env(tmp_path, "web", "v2") == {}
    with pytest.raises(VersionError, match="must look like v2"):
        version_env(tmp_path, "web", "latest")
    (tmp_path / "bad.env").write_text("no equals sign\n")
    with pytest.raises(VersionError, match=r"bad\.env:1: expected KEY=value"):
        parse_env_file(tmp_path / "bad.env")


def span(trace: str, sid: str, parent: str | None, name: str, start: int, **attrs: str) -> dict:
    return {
        "trace_id": trace,
        "span_id": sid,
        "parent_span_id": parent,
        "name": name,
        "kind": "SERVER",
        "service": name.split()[0],
        "version": "v1",
        "start_unix_nano": start * 1_000_000,
        "end_unix_nano": (start + 5) * 1_000_000,
        "duration_ms": 5.0,
        "status": "UNSET",
        "attributes": attrs,
    }


def test_trace_tree_by_order_id_or_trace_id() -> None:
    t1, t2 = "a" * 32, "b" * 32
    spans = [
        span(t1, "1", None, "gateway POST", 0),
        span(t1, "2", "1", "orders POST", 1, **{"order.id": "o-42"}),
        span(t1, "3", "2", "inventory process", 10),
        span(t2, "9", None, "gateway GET", 50, **{"http.target": "/api/orders/o-7"}),
    ]
    assert set(find_traces(spans, "o-42")) == {t1}
    assert set(find_traces(spans, t2.upper())) == {t2}
    assert find_traces(spans, "nothing") == {}
    lines = render(t1, find_traces(spans, "o-42")[t1])
    assert lines[0].startswith(f"trace {t1}: 3 spans, 3 services")
    assert "gateway POST" in lines[1]
    assert "└─ orders POST" in lines[2]
    assert lines[3].index("inventory") > lines[2].index("orders")


def test_replica_logs_interleave_by_time(tmp_path: Path) -> None:
    def line(ts: str, message: str) -> str:
        return json.dumps({"ts": ts, "message": message})

    (tmp_path / "web-v1-1000.log").write_text(
        line("2026-01-01T00:00:01", "a")
        + "\nTraceback: continues a\n"
        + line("2026-01-01T00:00:03", "c")
        + "\n"
    )
    (tmp_path / "web-v2-2000.log").write_text(line("2026-01-01T00:00:02", "b") + "\n")
    (tmp_path / "webshop-v1-3000.log").write_text(line("2026-01-01T00:00:00", "other") + "\n")
    sources = replica_logs(tmp_path, "web")
    assert [s.label for s in sources] == ["v1:1000", "v2:2000"]
    out = interleave(sources)
    assert [o.split("] ", 1)[0] for o in out] == ["[v1:1000", "[v1:1000", "[v2:2000", "[v1:1000"]
    assert "Traceback" in out[1] and '"c"' in out[3]
