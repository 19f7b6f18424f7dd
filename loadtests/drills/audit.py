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


@dataclass
class OrderAudit:
    accepted: int = 0
    terminal: dict[str, str] = field(default_factory=dict)  # id -> status
    reasons: dict[str, str] = field(default_factory=dict)  # id -> reason, of CANCELLED ones
    finished_at: dict[str, float] = field(default_factory=dict)  # id -> unix time
    pending: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # id -> last problem
    seconds: float = 0.0

    @property
    def lost(self) -> list[str]:
        return self.pending + list(self.unreadable)

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
    if not path.exists():
        return []
    ids = []
    for line in path.read_text().splitlines():
        try:
            ids.append(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue  # a half-written last line
    return list(dict.fromkeys(ids))


def audit_orders(
    gateway: GatewayInfo,
    ids: list[str],
    deadline: float,
    progress: Callable[[str], None] = lambda _m: None,
) -> OrderAudit:
    """Poll until every order is terminal or ``deadline`` (unix time) passes."""
    return asyncio.run(_audit(gateway, ids, deadline, progress))


async def _audit(
    gateway: GatewayInfo, ids: list[str], deadline: float, progress: Callable[[str], None]
) -> OrderAudit:
    result = OrderAudit(accepted=len(ids))
    started = time.monotonic()
    waiting = list(ids)
    problems: dict[str, str] = {}
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
                            return
                        order = await response.json()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    problems[order_id] = type(exc).__name__
                    return
            problems.pop(order_id, None)
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
