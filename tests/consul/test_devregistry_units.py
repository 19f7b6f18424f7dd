"""Unit tests of the development registry's parts: durations, status rules, payloads,
the registry's indexes and the blocking-query loop. No server, no network."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.consul.devregistry.blocking import QueryOptions, QueryResult, run_blocking
from infra.consul.devregistry.checks import StatusGate, status_for_http_code
from infra.consul.devregistry.definitions import (
    CRITICAL,
    PASSING,
    WARNING,
    PayloadError,
    ServiceDefinition,
    parse_check,
    parse_service,
)
from infra.consul.devregistry.durations import (
    DurationError,
    duration_from_json,
    format_duration,
    parse_duration,
    parse_duration_ns,
)
from infra.consul.devregistry.state import NodeInfo, Registry, default_check_id

# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("200ms", 0.2),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        (".5s", 0.5),
        ("300us", 0.0003),
        ("300µs", 0.0003),
        ("0", 0.0),
        ("-1s", -1.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_is_exact_in_nanoseconds() -> None:
    assert parse_duration_ns("1.1s") == 1_100_000_000
    assert parse_duration_ns("1h1m1s1ms1us1ns") == 3_661_001_001_001


@pytest.mark.parametrize("text", ["", "30", "s", "1x", "1m3", "+", "ten seconds", "1.2.3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration_ns(text)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (200_000_000, "200ms"),
        (1_500_000_000, "1.5s"),
        (10_000_000_000, "10s"),
        (60_000_000_000, "1m0s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_format_duration_like_go(nanos: int, text: str) -> None:
    assert format_duration(nanos) == text


def test_duration_from_json_accepts_strings_and_nanoseconds() -> None:
    assert duration_from_json("10s") == 10_000_000_000
    assert duration_from_json(5_000_000_000) == 5_000_000_000
    for bad in (True, None, [1], "ten"):
        with pytest.raises(DurationError):
            duration_from_json(bad)


# -- status rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (200, PASSING),
        (204, PASSING),
        (299, PASSING),
        (429, WARNING),
        (301, CRITICAL),
        (404, CRITICAL),
        (500, CRITICAL),
        (503, CRITICAL),
        (199, CRITICAL),
    ],
)
def test_http_code_to_status(code: int, status: str) -> None:
    assert status_for_http_code(code) == status


def test_status_gate_without_thresholds_records_everything() -> None:
    gate = StatusGate()
    assert [gate.apply(s) for s in (PASSING, CRITICAL, WARNING)] == [PASSING, CRITICAL, WARNING]


def test_status_gate_thresholds() -> None:
    gate = StatusGate(success_before_passing=2, failures_before_critical=3)
    assert gate.apply(PASSING) is None
    assert gate.apply(PASSING) == PASSING
    # Unset FailuresBeforeWarning means "same as FailuresBeforeCritical".
    assert [gate.apply(CRITICAL) for _ in range(3)] == [None, None, CRITICAL]

    gate = StatusGate(failures_before_warning=1, failures_before_critical=3)
    assert [gate.apply(CRITICAL) for _ in range(3)] == [WARNING, WARNING, CRITICAL]
    assert gate.apply(PASSING) == PASSING  # a success resets the failure count
    assert gate.apply(CRITICAL) == WARNING


# -- payloads ------------------------------------------------------------------------------


def test_every_casing_decodes_to_the_same_definition() -> None:
    upper = {
        "ID": "web-1",
        "Name": "web",
        "Tags": ["v1"],
        "Port": 80,
        "Meta": {"Version": "v1"},
        "Check": {"HTTP": "http://127.0.0.1/", "Interval": "1s", "Timeout": "2s"},
    }
    lower = {
        "id": "web-1",
        "name": "web",
        "tags": ["v1"],
        "port": 80,
        "meta": {"Version": "v1"},
        "checks": [{"http": "http://127.0.0.1/", "interval": "1s", "timeout": "2s"}],
    }
    assert parse_service(upper) == parse_service(lower)
    assert parse_service(upper).meta == {"Version": "v1"}  # map keys are data, kept as sent


def test_snake_case_aliases() -> None:
    check = parse_check({"ttl": "10s", "deregister_critical_service_after": "90s"})
    assert check is not None
    assert check.deregister_after_ns == 90_000_000_000
    service = parse_service({"name": "x", "enable_tag_override": True})
    assert service.enable_tag_override is True


def test_service_defaults() -> None:
    service = parse_service({"Name": "web", "Check": {}})
    assert isinstance(service, ServiceDefinition)
    assert service.id == "web"  # ID defaults to Name
    assert service.checks == []  # an empty check object is ignored, as by Consul
    assert service.weights == {"Passing": 1, "Warning": 1}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([], "Request decode failed"),
        ({"Name": ""}, "Missing service name"),
        ({"Name": "x", "Tags": "v1"}, "Request decode failed"),
        ({"Name": "x", "Meta": {"version": 1}}, "Request decode failed"),
        ({"Name": "x", "Meta": {"bad key": "v"}}, "Invalid Service Meta"),
        ({"Name": "x", "Meta": {"consul-x": "v"}}, "reserved"),
        ({"Name": "x", "Address": "0.0.0.0"}, "Invalid service address"),
        ({"Name": "x", "Port": 70000}, "Request decode failed"),
        ({"Name": "x", "Weights": {"Passing": 0}}, "Invalid Weights"),
        ({"Name": "x", "Check": {"TTL": "1s", "Interval": "1s"}}, "cannot both"),
        ({"Name": "x", "Check": {"TCP": "nohost", "Interval": "1s"}}, "host:port"),
        ({"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}}, "not supported"),
        ({"Name": "x", "Check": {"Name": "only a name"}}, "needs to be provided"),
        ({"Name": "x", "Check": {"TTL": "soon"}}, "Request decode failed"),
    ],
)
def test_bad_service_payloads(payload: object, fragment: str) -> None:
    with pytest.raises(PayloadError, match=fragment):
        parse_service(payload)


# -- the registry --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> Registry:
    return Registry(NodeInfo(name="node-1", node_id="id-1", address="127.0.0.1"), clock=clock)


def ttl_service(name: str, service_id: str | None = None, **check: object) -> ServiceDefinition:
    return parse_service({"Name": name, "ID": service_id or name, "Check": {"TTL": "30s", **check}})


def test_default_check_ids() -> None:
    assert default_check_id("web-1", 1, 1) == "service:web-1"
    assert default_check_id("web-1", 2, 3) == "service:web-1:2"


def test_bootstrap_has_consul_service_and_serf_check(registry: Registry) -> None:
    assert registry.services["consul"].agent_local is False
    assert registry.checks["serfHealth"].status == PASSING
    assert registry.agent_services() == [] and registry.agent_checks() == []


def test_new_check_is_critical_unless_a_status_is_given(registry: Registry) -> None:
    registry.register_service(ttl_service("a"))
    registry.register_service(ttl_service("b", Status="passing"))
    assert registry.checks["service:a"].status == CRITICAL
    assert registry.checks["service:b"].status == PASSING


def test_reregistering_keeps_check_status_and_identical_is_no_change(registry: Registry) -> None:
    registry.register_service(ttl_service("web"))
    check = registry.checks["service:web"]
    registry.update_check(check, PASSING, "ok")
    index = registry.index
    registry.register_service(ttl_service("web"))
    assert registry.checks["service:web"].status == PASSING
    assert registry.index == index  # nothing the catalog shows changed: no new index
    registry.register_service(parse_service({"Name": "web", "Port": 81, "Check": {"TTL": "30s"}}))
    assert registry.index > index
    assert registry.services["web"].create_index < registry.services["web"].modify_index


def test_replace_existing_checks(registry: Registry) -> None:
    two = {"Name": "web", "Checks": [{"TTL": "30s"}, {"TTL": "30s", "CheckID": "extra"}]}
    registry.register_service(parse_service(two))
    assert {"service:web:1", "extra"} <= set(registry.checks)
    one = {"Name": "web", "Check": {"TTL": "30s"}}
    registry.register_service(parse_service(one))
    assert "extra" in registry.checks  # kept without ?replace-existing-checks
    registry.register_service(parse_service(one), replace_existing_checks=True)
    assert "extra" not in registry.checks and "service:web" in registry.checks


def test_indexes_are_per_service_and_move_only_on_status_change(registry: Registry) -> None:
    registry.register_service(ttl_service("web"))
    registry.register_service(ttl_service("db"))
    web_index = registry.service_index("web")
    db_check = registry.checks["service:db"]

    assert registry.update_check(db_check, PASSING, "up") is True
    assert registry.service_index("web") == web_index  # another service changed
    db_index = registry.service_index("db")
    assert registry.update_check(db_check, PASSING, "new output") is False
    assert registry.service_index("db") == db_index  # output-only changes take no index
    assert db_check.output == "new output"


def test_reaper_selection_follows_critical_time(registry: Registry, clock: FakeClock) -> None:
    registry.register_service(ttl_service("web", DeregisterCriticalServiceAfter="10s"))
    registry.register_service(ttl_service("db", DeregisterCriticalServiceAfter="10s"))
    registry.update_check(registry.checks["service:db"], PASSING, "")
    clock.now += 9
    assert registry.services_to_reap() == []
    clock.now += 2
    assert registry.services_to_reap() == ["web"]  # critical since registration, 11 s ago
    registry.update_check(registry.checks["service:db"], CRITICAL, "")
    clock.now += 10.5
    assert sorted(registry.services_to_reap()) == ["db", "web"]


def test_kv_check_and_set_and_delete(registry: Registry) -> None:
    assert registry.kv_put("k", b"1", cas=0) is True
    assert registry.kv_put("k", b"2", cas=0) is False
    entry = registry.kv_get("k")
    assert entry is not None
    assert registry.kv_put("k", b"2", cas=entry.modify_index + 1) is False
    assert registry.kv_put("k", b"2", cas=entry.modify_index) is True
    assert registry.kv_put("missing", b"x", cas=3) is False
    current = registry.kv_get("k")
    assert current is not None and current.create_index == entry.create_index
    assert registry.kv_delete("k", cas=current.modify_index + 1) is False
    assert registry.kv_delete("k", cas=current.modify_index) is True
    assert registry.kv_delete("k", cas=7) is True  # nothing left to delete


def test_kv_keys_with_separator(registry: Registry) -> None:
    for key in ("a/1", "a/b/2", "a/b/3", "a/c", "b"):
        registry.kv_put(key, b"")
    assert registry.kv_keys("a/") == ["a/1", "a/b/2", "a/b/3", "a/c"]
    assert registry.kv_keys("a/", "/") == ["a/1", "a/b/", "a/c"]
    assert registry.kv_keys("", "/") == ["a/", "b"]


def test_kv_prefix_index_counts_deletions(registry: Registry) -> None:
    registry.kv_put("p/one", b"")
    registry.kv_put("p/two", b"")
    registry.kv_put("q/other", b"")
    before = registry.kv_prefix_index("p/")
    registry.kv_put("q/again", b"")
    assert registry.kv_prefix_index("p/") == before  # writes elsewhere do not move it
    registry.kv_delete("p/two")
    assert registry.kv_prefix_index("p/") > before  # a deletion under the prefix does


# -- the blocking loop ---------------------------------------------------------------------


def key_query(registry: Registry, key: str) -> QueryResult:
    entry = registry.kv_get(key)
    return QueryResult(registry.kv_key_index(key), entry, found=entry is not None)


async def test_blocking_returns_at_once_for_index_zero_or_from_the_future(
    registry: Registry,
) -> None:
    registry.kv_put("k", b"v")
    for index in (0, registry.index + 100):
        started = time.monotonic()
        result = await run_blocking(
            registry, QueryOptions(index=index, wait_seconds=5), lambda: key_query(registry, "k")
        )
        assert result.found and time.monotonic() - started < 0.5


async def test_blocking_waits_for_the_watched_key_only(registry: Registry) -> None:
    registry.kv_put("watched", b"1")
    index = registry.kv_key_index("watched")
    task = asyncio.create_task(
        run_blocking(
            registry,
            QueryOptions(index=index, wait_seconds=10),
            lambda: key_query(registry, "watched"),
        )
    )
    await asyncio.sleep(0)  # let the query block
    registry.kv_put("other", b"x")
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done
    registry.kv_put("watched", b"2")
    result = await asyncio.wait_for(task, 1)
    assert result.index > index and result.body.value == b"2"


async def test_blocking_on_a_missing_key_ignores_unrelated_writes(registry: Registry) -> None:
    index = registry.kv_key_index("later")
    task = asyncio.create_task(
        run_blocking(
            registry,
            QueryOptions(index=index, wait_seconds=10),
            lambda: key_query(registry, "later"),
        )
    )
    await asyncio.sleep(0)
    registry.kv_put("unrelated", b"x")
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done
    registry.kv_put("later", b"here")
    result = await asyncio.wait_for(task, 1)
    assert result.found


async def test_blocking_times_out_with_the_same_index(registry: Registry) -> None:
    registry.kv_put("k", b"v")
    index = registry.kv_key_index("k")
    started = time.monotonic()
    result = await run_blocking(
        registry, QueryOptions(index=index, wait_seconds=0.3), lambda: key_query(registry, "k")
    )
    assert result.index == index
    assert 0.3 <= time.monotonic() - started < 1.0


async def test_close_releases_blocked_queries(registry: Registry) -> None:
    registry.kv_put("k", b"v")
    index = registry.kv_key_index("k")
    task = asyncio.create_task(
        run_blocking(
            registry, QueryOptions(index=index, wait_seconds=60), lambda: key_query(registry, "k")
        )
    )
    await asyncio.sleep(0)
    registry.close()
    result = await asyncio.wait_for(task, 1)
    assert result.index == index
