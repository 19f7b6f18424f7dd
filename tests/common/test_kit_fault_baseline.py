"""A version's own baseline faults and the service-wide KV faults combine (the stronger wins)."""

from __future__ import annotations

import json

from services.common.faults import FaultInjector, FaultSettings
from services.common.metrics import Metrics


def test_baseline_survives_kv_changes() -> None:
    injector = FaultInjector("orders", Metrics("orders", "v3"), FaultSettings(error_rate=0.3))
    assert injector.current.error_rate == 0.3
    injector.apply_raw(json.dumps({"latency_ms": 200, "error_rate": 0.1}).encode())
    assert injector.current == FaultSettings(latency_ms=200, error_rate=0.3)
    injector.apply_raw(None)  # the drill cleared the key
    assert injector.current == FaultSettings(error_rate=0.3)
    injector.apply_raw(b"not json")
    assert injector.current == FaultSettings(error_rate=0.3)


def test_no_baseline_follows_kv_alone() -> None:
    injector = FaultInjector("orders", Metrics("orders", "v1"))
    injector.apply_raw(json.dumps({"error_rate": 0.5}).encode())
    assert injector.current == FaultSettings(error_rate=0.5)
    injector.apply_raw(b"{}")
    assert not injector.current.active


def test_a_version_key_applies_with_the_service_key() -> None:
    """``mesh/faults/orders/v2`` adds faults to v2's instances; the stronger of the two keys
    and the baseline applies, and clearing one key leaves the other in force."""
    injector = FaultInjector("orders", Metrics("orders", "v2"), version="v2")
    assert injector.version_key == "mesh/faults/orders/v2"
    injector.apply_raw(json.dumps({"error_rate": 0.5}).encode(), "mesh/faults/orders/v2")
    assert injector.current == FaultSettings(error_rate=0.5)
    injector.apply_raw(json.dumps({"latency_ms": 100, "error_rate": 0.1}).encode())
    assert injector.current == FaultSettings(latency_ms=100, error_rate=0.5)
    injector.apply_raw(None, "mesh/faults/orders/v2")
    assert injector.current == FaultSettings(latency_ms=100, error_rate=0.1)
    injector.apply_raw(b"{}")
    assert not injector.current.active
