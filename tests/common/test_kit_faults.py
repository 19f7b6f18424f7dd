"""Fault settings from Consul KV reach a running service within a second."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from kit_support import Sample, consul_sync

from infra.process import wait_until


def test_faults_apply_within_a_second_and_spare_the_probes(
    samples: Callable[..., Sample], consul_addr: str
) -> None:
    sample = samples(SAMPLE_CONSUME="false").start()
    client = consul_sync(consul_addr)
    key = f"mesh/faults/{sample.name}"
    # The watch is in place once the service is up; a first answer proves the route works.
    assert sample.request("GET", "/items/nothing")[0] == 404

    try:
        client.kv.put(key, json.dumps({"error_rate": 1.0}))
        changed = time.monotonic()
        wait_until(
            lambda: sample.request("GET", "/items/nothing")[0] == 500,
            timeout=1.0,
            interval=0.02,
            what="injected errors",
        )
        status, _, body = sample.request("GET", "/items/nothing")
        assert (status, body["error"]["code"]) == (500, "injected_fault")
        assert sample.request("GET", "/healthz")[0] == 200
        assert sample.request("GET", "/readyz")[0] == 200
        assert sample.metric("faults_injected_total", kind="error") >= 2
        assert time.monotonic() - changed < 1.0

        client.kv.put(key, json.dumps({"latency_ms": 300}))

        def slow() -> bool:
            started = time.monotonic()
            status = sample.request("GET", "/items/nothing")[0]
            return status == 404 and time.monotonic() - started >= 0.3

        wait_until(slow, timeout=1.5, interval=0.02, what="injected latency")
        started = time.monotonic()
        assert sample.request("GET", "/metrics")[0] == 200
        assert time.monotonic() - started < 0.3
    finally:
        client.kv.delete(key)
    wait_until(
        lambda: sample.request("GET", "/items/nothing")[0] == 404,
        timeout=1.0,
        interval=0.02,
        what="faults cleared",
    )


def test_malformed_fault_settings_turn_faults_off(
    samples: Callable[..., Sample], consul_addr: str
) -> None:
    sample = samples(SAMPLE_CONSUME="false").start()
    client = consul_sync(consul_addr)
    key = f"mesh/faults/{sample.name}"
    try:
        client.kv.put(key, json.dumps({"error_rate": 1.0}))
        wait_until(
            lambda: sample.request("GET", "/items/x")[0] == 500, timeout=1.0, what="faults on"
        )
        client.kv.put(key, json.dumps({"error_rate": 7}))
        wait_until(
            lambda: sample.request("GET", "/items/x")[0] == 404, timeout=1.0, what="faults off"
        )
    finally:
        client.kv.delete(key)
