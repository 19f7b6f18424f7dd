"""Per-second samples of a Locust run, for the drills' timelines (``LOAD_SAMPLES=<path>``).

A listener on Locust's request event puts every request in the bucket of the wall-clock
second in which it completed. Each second, the second that just ended becomes one JSON line
(appended and flushed, so a drill can read the file while the load runs)::

    {"t": 1764028800.0, "users": 10, "requests": 52, "failures": 1,
     "p50_ms": 12.1, "p95_ms": 40.3, "p99_ms": 95.0, "max_ms": 120.4,
     "by_name": {"GET /api/stock": {"requests": 20, "failures": 0}, ...},
     "errors": {"POST /api/orders: HTTP 503 unavailable": 1},
     "completions": 8, "completion_failures": 0,
     "completion_p50_ms": 310.2, "completion_p99_ms": 790.5}

``t`` is the unix time at which the second ends; ``users`` the user count when the line is
written. Percentiles are exact (nearest rank over that second's response times, failures
included, as Locust counts them) and null in a second without requests; a second without
requests is written all the same, so the timeline has no holes. The ORDER pseudo-requests
(order completion) count only in the ``completion*`` fields. What is left is written when the
test stops (the second in progress included) and when Locust quits.

The samples come from the process that runs the users: the local runner, or each worker
(give each its own path); a master writes none. ``read_samples`` reads them back; importing
this module does not import Locust (which patches the standard library with gevent).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing locust patches the standard library (gevent): not for readers
    from locust.env import Environment

ORDER = "ORDER"


@dataclass
class _Second:
    times: list[float] = field(default_factory=list)
    times_by_name: dict[str, list[float]] = field(default_factory=dict)
    failures: int = 0
    by_name: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    completion_times: list[float] = field(default_factory=list)
    completion_failures: int = 0


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank percentile of sorted values: a value that was really measured."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


def short_error(exception: BaseException | str) -> str:
    text = str(exception).strip().splitlines()
    first = text[0] if text else type(exception).__name__
    return first if len(first) <= 120 else first[:117] + "..."


class SampleWriter:
    """Buckets requests by second and writes each finished second as one line."""

    def __init__(
        self,
        path: str | Path,
        users: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._file = open(path, "a", encoding="utf-8")  # closed by close()
        self._users = users
        self._clock = clock
        self._seconds: dict[int, _Second] = {}
        self._next: int | None = None  # the first second not written yet; None when stopped
        self._ticker: Any = None  # the greenlet that writes each second

    def record(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: BaseException | str | None = None,
        **_: Any,
    ) -> None:
        second = int(self._clock())
        if self._next is not None:
            second = max(second, self._next)  # a wall clock stepping back loses nothing
        bucket = self._seconds.setdefault(second, _Second())
        if request_type == ORDER:
            bucket.completion_times.append(response_time)
            bucket.completion_failures += exception is not None
            return
        bucket.times.append(response_time)
        bucket.times_by_name.setdefault(name, []).append(response_time)
        counts = bucket.by_name.setdefault(name, {"requests": 0, "failures": 0})
        counts["requests"] += 1
        if exception is not None:
            bucket.failures += 1
            counts["failures"] += 1
            bucket.errors[f"{name}: {short_error(exception)}"] += 1

    def line(self, second: int, bucket: _Second) -> dict[str, Any]:
        times = sorted(bucket.times)
        completions = sorted(bucket.completion_times)
        return {
            "t": float(second + 1),
            "users": self._users(),
            "requests": len(times),
            "failures": bucket.failures,
            "p50_ms": percentile(times, 50),
            "p95_ms": percentile(times, 95),
            "p99_ms": percentile(times, 99),
            "max_ms": round(times[-1], 3) if times else None,
            "by_name": bucket.by_name,
            "errors": dict(bucket.errors),
            "completions": len(completions),
            "completion_failures": bucket.completion_failures,
            "completion_p50_ms": percentile(completions, 50),
            "completion_p99_ms": percentile(completions, 99),
            "completion_ms": [round(t, 1) for t in completions],
            # The raw times, so a drill can take exact percentiles over any window (of one
            # route too: a lesson compares the services beside the one it operates on).
            "rt_ms": [round(t, 1) for t in times],
            "rt_by_name": {
                name: [round(t, 1) for t in values] for name, values in bucket.times_by_name.items()
            },
        }

    def flush(self, until: int) -> None:
        """Write every second before ``until`` that is not written yet, empty ones too."""
        if self._next is None:
            return
        for second in range(self._next, until):
            bucket = self._seconds.pop(second, None) or _Second()
            self._file.write(json.dumps(self.line(second, bucket)) + "\n")
        self._file.flush()
        self._next = max(self._next, until)

    def start(self) -> None:
        now = int(self._clock())
        # Whatever came in between two runs (web UI: stop, then start again) is not this run's.
        self._seconds = {s: b for s, b in self._seconds.items() if s >= now}
        self._next = now
        if self._ticker is None:
            import gevent

            self._ticker = gevent.spawn(self._tick)

    def _tick(self) -> None:
        import gevent

        while True:
            now = self._clock()
            gevent.sleep(math.floor(now) + 1.01 - now)  # just after the second ends
            self.flush(int(self._clock()))

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.kill()
            self._ticker = None
        self.flush(int(self._clock()) + 1)  # the second in progress too
        self._next = None

    def close(self) -> None:
        if self._file.closed:
            return
        self.stop()
        self._file.close()


def attach(environment: Environment, path: str | Path) -> SampleWriter | None:
    """Write samples of this process's requests to ``path`` while a test runs."""
    from locust.runners import MasterRunner

    if isinstance(environment.runner, MasterRunner):
        return None  # the workers make the requests; their events never reach the master

    def users() -> int:
        return environment.runner.user_count if environment.runner is not None else 0

    writer = SampleWriter(path, users)
    environment.events.request.add_listener(writer.record)
    environment.events.test_start.add_listener(lambda **_: writer.start())
    environment.events.test_stop.add_listener(lambda **_: writer.stop())
    environment.events.quitting.add_listener(lambda **_: writer.close())
    return writer


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a samples file; a half-written last line (the load still running, or
    killed mid-write) is left out, a broken line before it is an error."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    samples = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            samples.append(json.loads(text))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
    return samples
