"""After the load: did every accepted order reach a terminal state? Asked of the gateway's
public API, as a user would, never of a service's store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from infra.runtime.models import GatewayInfo

TERMINAL = frozenset({"CONFIRMED", "CANCELLED"})
CONCURRENCY = 16
ROUND_PAUSE = 0.5
# An accepted order the gateway has answered 404 for this long is gone (its store lost it:
# nothing creates an order but its POST); when only such orders are left, waiting for the
# deadline would change nothing.
GONE_AFTER = 5.0


@dataclass
class OrderAudit:
    accepted: int = 0
    terminal: dict[str, str] = field(default_factory=dict)  # id -> status
    reasons: dict[str, str] = field(default_factory=dict)  # id -> reason, of CANCELLED ones
    finished_at: dict[str, float] = field(default_factory=dict)  # id -> unix time
    pending: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # id -> last problem
    seconds: float = 0.0
    accepted_at: dict[str, float] = field(default_factory=dict)  # id -> unix time of its 202

    @property
    def lost(self) -> list[str]:
        return self.pending + list(self.unreadable)

    def why_lost(self, order_id: str) -> str:
        """What the gateway last said of a lost order, in words."""
        problem = self.unreadable.get(order_id)
        if problem == "HTTP 404":
            return "gone: the gateway answers 404 (no such order any more)"
        if problem is not None:
            return f"unreadable: {problem}"
        return "still PENDING at the audit's deadline"

    def counts(self) -> dict[str, int]:
        return _tally(self.terminal.values())

    def cancelled_by_reason(self) -> dict[str, int]:
        """CANCELLED orders per reason (``out_of_stock``, ``payment_failed``, ...), most first."""
        counted = _tally(self.reasons.values())
        return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


def _tally(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def accepted_orders(path: Path) -> list[str]:
    return list(accepted_times(path))


def accepted_times(path: Path) -> dict[str, float]:
    """Each accepted order's id and when its 202 came (unix time), in the order accepted."""
    if not path.exists():
        return {}
    times: dict[str, float] = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            times.setdefault(str(entry["id"]), float(entry.get("at") or 0.0))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a half-written last line
    return times


def audit_orders(
    gateway: GatewayInfo,
    ids: list[str],
    deadline: float,
    progress: Callable[[str], None] = lambda _m: None,
) -> OrderAudit:
    """Poll until every order is terminal or ``deadline`` (unix time) passes."""
    return asyncio.run(audit_orders_async(gateway, ids, deadline, progress))


async def audit_orders_async(
    gateway: GatewayInfo,
    ids: list[str],
    deadline: float,
    progress: Callable[[str], None] = lambda _m: None,
) -> OrderAudit:
    result = OrderAudit(accepted=len(ids))
    started = time.monotonic()
    waiting = list(ids)
    problems: dict[str, str] = {}
    missing_since: dict[str, float] = {}  # id -> when it first answered 404, in a row
    limit = asyncio.Semaphore(CONCURRENCY)
    headers = {"X-API-Key": gateway.api_key}
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def check(order_id: str) -> None:
            async with limit:
                try:
                    async with session.get(f"{gateway.url}/api/orders/{order_id}") as response:
                        if response.status != 200:
                            problems[order_id] = f"HTTP {response.status}"
                            if response.status == 404:
                                missing_since.setdefault(order_id, time.monotonic())
                            else:
                                missing_since.pop(order_id, None)
                            return
                        order = await response.json()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    problems[order_id] = type(exc).__name__
                    missing_since.pop(order_id, None)
                    return
            problems.pop(order_id, None)
            missing_since.pop(order_id, None)
            status = order.get("status")
            if status in TERMINAL:
                result.terminal[order_id] = status
                if status == "CANCELLED":
                    result.reasons[order_id] = str(order.get("reason") or "no reason given")
                result.finished_at[order_id] = _terminal_time(order) or time.time()

        rounds = 0
        while waiting:
            await asyncio.gather(*(check(i) for i in waiting))
            waiting = [i for i in waiting if i not in result.terminal]
            rounds += 1
            if rounds == 1 or not waiting:
                progress(f"audit: {len(result.terminal)}/{len(ids)} accepted orders terminal")
            if not waiting or time.time() >= deadline:
                break
            now = time.monotonic()
            if all(now - missing_since.get(i, now) >= GONE_AFTER for i in waiting):
                progress(f"audit: {len(waiting)} accepted orders gone (404 for {GONE_AFTER:g}s)")
                break
            await asyncio.sleep(ROUND_PAUSE)
    result.pending = [i for i in waiting if i not in problems]
    result.unreadable = {i: problems[i] for i in waiting if i in problems}
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _terminal_time(order: dict[str, object]) -> float | None:
    """When the order's timeline says it became terminal."""
    timeline = order.get("timeline")
    if not isinstance(timeline, list):
        return None
    for entry in reversed(timeline):
        if isinstance(entry, dict) and entry.get("status") in TERMINAL:
            try:
                return datetime.fromisoformat(str(entry["at"]).replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                return None
    return None
