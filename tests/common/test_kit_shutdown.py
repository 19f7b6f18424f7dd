"""Graceful shutdown of an HTTP instance, and an instance whose store is unreachable."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kit_support import Sample, http

from infra.process import free_port, wait_until


def test_sigterm_finishes_in_flight_requests_then_exits_0(
    samples: Callable[..., Sample],
) -> None:
    sample = samples(SAMPLE_CONSUME="false").start()
    sample.ready()
    answers: list[Any] = []
    slow = threading.Thread(
        target=lambda: answers.append(sample.request("GET", "/items/none?delay_ms=1500"))
    )
    slow.start()
    # Scrapes are not counted: the slow request is the one in flight.
    wait_until(
        lambda: sample.metric("http_requests_in_flight") >= 1, timeout=5, what="request in flight"
    )
    assert sample.stop() == 0
    slow.join(timeout=10)
    [(status, headers, body)] = answers
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert "X-Request-Id" in headers
    assert not sample.proc.alive()
    try:
        refused = http("GET", f"{sample.url}/healthz", timeout=1)[0] != 200
    except OSError:
        refused = True
    assert refused


def test_unreachable_redis_makes_the_instance_unready_and_answers_503(
    samples: Callable[..., Sample],
) -> None:
    sample = samples(SAMPLE_CONSUME="false", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    sample.start()
    status, _, body = sample.request("GET", "/readyz")
    assert status == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"] == "unreachable"
    assert body["error"]["code"] == "not_ready"
    assert sample.request("GET", "/healthz")[0] == 200
    status, headers, body = sample.request("POST", "/items", {"name": "x", "quantity": 1})
    assert (status, body["error"]["code"]) == (503, "unavailable")
    assert headers["Retry-After"] == "1"
