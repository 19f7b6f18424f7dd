"""Canary analysis: the canary's success rate and p99 over one interval, from two scrapes of
the gateway's ``gateway_requests_total`` and ``gateway_request_duration_seconds``.

As in Flagger, a request fails when it answered 5xx; fewer requests than ``min_requests`` give
an inconclusive result (too little traffic to judge), never a pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from infra.local import promtext
from infra.runtime.models import Analysis, RolloutSpec

REQUESTS = "gateway_requests_total"
LATENCY = "gateway_request_duration_seconds"


@dataclass(frozen=True)
class VersionTraffic:
    """Counters of one upstream version at one instant (or their increase over an interval)."""

    requests: float
    errors: float
    buckets: dict[float, float]


def version_traffic(text: str, service: str, version: str) -> VersionTraffic:
    samples = promtext.parse(text)
    labels = {"upstream": service, "upstream_version": version}
    series = promtext.matching(samples, REQUESTS, **labels)
    requests = sum(s.value for s in series)
    errors = sum(s.value for s in series if s.labels.get("status", "").startswith("5"))
    return VersionTraffic(requests, errors, promtext.buckets(samples, LATENCY, **labels))


def increase(after: VersionTraffic, before: VersionTraffic) -> VersionTraffic:
    return VersionTraffic(
        promtext.delta(after.requests, before.requests),
        promtext.delta(after.errors, before.errors),
        promtext.bucket_delta(after.buckets, before.buckets),
    )


def analyse(window: VersionTraffic, spec: RolloutSpec, step: int, weight: int) -> Analysis:
    """Judge one interval of canary traffic against the rollout's thresholds."""
    requests = round(window.requests)
    errors = round(window.errors)
    p99 = promtext.quantile(0.99, window.buckets)
    p99_ms = round(p99 * 1000, 1) if p99 is not None else None
    error_rate = errors / requests if requests else None
    verdict: str = "pass"
    reasons: list[str] = []
    if requests == 0 or requests < spec.min_requests:
        verdict = "inconclusive"
        reasons.append(f"{requests} canary requests (< {spec.min_requests})")
    else:
        assert error_rate is not None
        if error_rate > spec.max_error_rate:
            verdict = "fail"
            reasons.append(f"error rate {error_rate:.1%} > {spec.max_error_rate:.1%}")
        if p99 is not None and p99 > spec.max_p99:
            verdict = "fail"
            reasons.append(f"p99 {p99_ms:.0f}ms > {spec.max_p99 * 1000:.0f}ms")
    if verdict == "pass":
        reasons.append(
            f"error rate {error_rate:.1%}, p99 "
            + (f"{p99_ms:.0f}ms" if p99_ms is not None else "n/a")
            + f" over {requests} requests"
        )
    return Analysis(
        step=step,
        weight=weight,
        requests=requests,
        errors=errors,
        error_rate=round(error_rate, 4) if error_rate is not None else None,
        p99_ms=p99_ms,
        verdict=verdict,  # type: ignore[arg-type]
        reason="; ".join(reasons),
        at=time.time(),
    )
