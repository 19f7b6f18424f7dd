"""The console's metric math: per-second increases from scrapes, and windows over them.

There is no Prometheus server on the local runtime, so the console does what PromQL's
``increase()`` and ``histogram_quantile()`` do, on its own scrapes:

* a counter's increase between two scrapes is taken per series, and a counter that went down
  was reset (its process restarted): the increase is then its new value, as Prometheus counts
  it;
* each second's increases of a flow (an HTTP edge, a topic) are kept in a ring of the last
  five minutes with the wall time they were taken over; a window (10 s, 1 min, 5 min) is the
  sum of its last seconds, kept as running sums so a tick costs the same whatever the window,
  and its rate is its count over its own measured time;
* a percentile is read from the window's summed histogram buckets, interpolated within the
  bucket holding it (:func:`infra.local.promtext.quantile`, PromQL's rule).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from infra.local import promtext

WINDOWS: dict[str, int] = {"10s": 10, "1m": 60, "5m": 300}
LONGEST = max(WINDOWS.values())

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(name: str, labels: Mapping[str, str]) -> SeriesKey:
    return name, tuple(sorted(labels.items()))


class CounterTracker:
    """Per-series increases of one source's counters (one scrape target) between scrapes.

    ``fresh`` says how to treat a series seen for the first time: a target that appeared
    after the console started counts it from zero (everything it counted happened since the
    last scrape); a target already running when the console started takes it as the
    baseline (its past is not this window's traffic)."""

    def __init__(self, fresh: bool) -> None:
        self.fresh = fresh
        self._last: dict[SeriesKey, float] = {}
        self._started: float | None = None

    def increase(self, key: SeriesKey, value: float) -> float:
        before = self._last.get(key)
        self._last[key] = value
        if before is None:
            return value if self.fresh else 0.0
        return promtext.delta(value, before)

    def after_first_scrape(self) -> None:
        """Series that appear on a later scrape were created since the one before."""
        self.fresh = True

    def process_started(self, at: float) -> None:
        """The target's ``process_start_time_seconds``: when it changes, the process was
        restarted and every counter began again from zero, including those that have already
        climbed past their old value (a per-series check alone would miss those)."""
        if self._started is not None and at != self._started:
            self._last.clear()
            self.fresh = True
        self._started = at


@dataclass
class Flow:
    """What went through one edge in one second (or a window): requests, 5xx answers, and
    the latency histogram's increases by upper bound (cumulative, as Prometheus keeps it)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0  # the wall time these counts were taken over

    def add(self, other: Flow, sign: float = 1.0) -> None:
        self.seconds += sign * other.seconds
        self.requests += sign * other.requests
        self.errors += sign * other.errors
        for bound, count in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + sign * count

    def stats(self) -> dict[str, float | None]:
        """Rate, error percentage and percentiles (ms) over the flow's seconds."""
        requests = max(self.requests, 0.0)
        seconds = max(self.seconds, 1e-9)
        p50 = promtext.quantile(0.50, self.buckets) if requests > 0 else None
        p99 = promtext.quantile(0.99, self.buckets) if requests > 0 else None
        return {
            "rps": round(requests / seconds, 2),
            "err_pct": round(100.0 * self.errors / requests, 2) if requests else None,
            "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
            "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
            "requests": round(requests),
            "errors": round(max(self.errors, 0.0)),
        }


class Windows:
    """The last five minutes of one flow, second by second, with running window sums."""

    def __init__(self) -> None:
        self.seconds: deque[Flow] = deque(maxlen=LONGEST)
        self.sums: dict[str, Flow] = {name: Flow() for name in WINDOWS}

    def push(self, second: Flow) -> None:
        for name, length in WINDOWS.items():
            self.sums[name].add(second)
            if len(self.seconds) >= length:
                # The second ``length`` back leaves this window as the new one enters.
                self.sums[name].add(self.seconds[-length], -1.0)
        self.seconds.append(second)

    def stats(self) -> dict[str, dict[str, float | None]]:
        return {name: self.sums[name].stats() for name in WINDOWS}

    def rates(self) -> dict[str, float]:
        """Only the rate of each window (for flows of messages, which have no latency)."""
        return {name: self.sums[name].stats()["rps"] or 0.0 for name in WINDOWS}


def lag_from_offsets(
    end_offsets: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int]
) -> dict[str, int]:
    """Consumer lag per topic: end offset minus the committed offset, summed over partitions.

    A partition the group never committed on (offset -1) is behind by its whole length, as
    it would read from the start; a committed offset past the end (the broker lost data) is
    no lag, not a negative one."""
    lag: dict[str, int] = {}
    for (topic, partition), end in end_offsets.items():
        done = committed.get((topic, partition), -1)
        behind = end - max(done, 0)
        lag[topic] = lag.get(topic, 0) + max(behind, 0)
    return lag


def shares(requests: Mapping[str, float]) -> dict[str, float | None]:
    """Each version's share (percent) of the requests it served with the others."""
    total = sum(max(v, 0.0) for v in requests.values())
    return {
        version: (round(100.0 * max(count, 0.0) / total, 1) if total > 0 else None)
        for version, count in requests.items()
    }


# Health thresholds on the 5xx share (Kiali's): >= 0.1% degraded, above 10% failing.
DEGRADED_PCT = 0.1
FAILING_PCT = 10.0


def health(err_pct: float | None, requests: float) -> str:
    """``idle`` (no traffic), ``ok``, ``degraded`` or ``failing``."""
    if not requests or err_pct is None:
        return "idle"
    if err_pct > FAILING_PCT:
        return "failing"
    if err_pct >= DEGRADED_PCT:
        return "degraded"
    return "ok"


def worst(states: Iterable[str]) -> str:
    order = ["idle", "ok", "degraded", "failing", "down"]
    found = [s for s in states if s in order]
    return max(found, key=order.index) if found else "idle"
