"""Consul's blocking queries: ``?index=N&wait=30s`` holds a read until its result moves past N.

The loop follows Consul's own (``agent/blockingquery``): run the query; answer if its index
is past the client's; otherwise wait for the next write anywhere, run it again, and so on
until the wait ends. The query computes a per-resource index, so writes elsewhere wake the
loop but do not end it. A query that finds nothing twice in a row treats the newer index
as "no change", so a watch on a missing key does not return on unrelated writes either.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .durations import MINUTE, DurationError, parse_duration_ns
from .errors import ApiError
from .state import Registry

DEFAULT_WAIT_NS = 5 * MINUTE
MAX_WAIT_NS = 10 * MINUTE
# Consul adds up to wait/16 so that many watchers do not all wake at once.
JITTER_FRACTION = 16
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class QueryOptions:
    index: int = 0
    wait_seconds: float = DEFAULT_WAIT_NS / 1e9


@dataclass
class QueryResult:
    index: int
    body: Any
    # False when nothing matched (a missing key, a service with no instance).
    found: bool = True


def is_uint64(text: str) -> bool:
    """Go's strconv.ParseUint(text, 10, 64) would accept it (ASCII digits only)."""
    return bool(_DIGITS.fullmatch(text)) and int(text) < 2**64


def parse_query_options(query: Mapping[str, str]) -> QueryOptions:
    index = 0
    raw_index = query.get("index", "")
    if raw_index:
        if not is_uint64(raw_index):
            raise ApiError(400, "Invalid index")
        index = int(raw_index)
    wait_ns = DEFAULT_WAIT_NS
    raw_wait = query.get("wait", "")
    if raw_wait:
        try:
            wait_ns = parse_duration_ns(raw_wait)
        except DurationError:
            raise ApiError(400, "Invalid wait time") from None
    if wait_ns <= 0:
        wait_ns = DEFAULT_WAIT_NS
    wait_ns = min(wait_ns, MAX_WAIT_NS)
    return QueryOptions(index=index, wait_seconds=wait_ns / 1e9)


async def run_blocking(
    registry: Registry, options: QueryOptions, query: Callable[[], QueryResult]
) -> QueryResult:
    # An index past anything handed out can only come from before a restart of this
    # registry (its state lives in memory): answer at once so the client resyncs.
    if options.index == 0 or options.index > registry.index or registry.closing:
        return query()
    loop = asyncio.get_running_loop()
    wait = options.wait_seconds
    deadline = loop.time() + wait + random.uniform(0, wait / JITTER_FRACTION)
    min_index = options.index
    not_found_before = False
    while True:
        # Take the event before reading, so a write between the two is not missed.
        changed = registry.changed()
        result = query()
        if not result.found:
            if not_found_before:
                min_index = max(min_index, result.index)
            not_found_before = True
        remaining = deadline - loop.time()
        if result.index > min_index or remaining <= 0 or registry.closing:
            return result
        try:
            async with asyncio.timeout(remaining):
                await changed.wait()
        except TimeoutError:
            return query()
