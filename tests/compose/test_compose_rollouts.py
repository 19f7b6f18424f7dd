"""meshctl's rollout driver on compose (infra/compose/rollouts.py), without a Docker engine.

The strategies are the real ones; the target is an in-memory stand-in for the containers, so
this checks only what the driver adds: the record other terminals read and the order of
"finished" and the cleanup after it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from infra.compose.rollouts import ComposeRollouts, RolloutStore
from infra.local.rollouts import rolling
from infra.runtime.models import RolloutSpec


class MemoryTarget:
    """Replicas as numbers: every change is ready at once."""

    def __init__(self) -> None:
        self._stable = {"orders": "v1"}
        self._desired = {("orders", "v1"): 2}

    def stable(self, service: str) -> str:
        return self._stable[service]

    def set_stable(self, service: str, version: str) -> None:
        self._stable[service] = version

    def desired(self, service: str, version: str) -> int:
        return self._desired.get((service, version), 0)

    def set_desired(self, service: str, version: str, count: int) -> None:
        self._desired[(service, version)] = count

    def smoke_path(self, service: str) -> str | None:
        return None

    async def wait_ready(self, service: str, version: str, count: int, timeout: float) -> None:
        return None

    async def wait_at_most(self, service: str, version: str, count: int, timeout: float) -> None:
        return None

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        return None

    async def gateway_metrics(self) -> str:
        return ""

    async def smoke(self, path: str, version: str) -> str | None:
        return None


def test_finished_is_said_only_after_the_cleanup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The phase turns final a moment before the strategy's task ends; whoever sees
    "completed" (a test, a drill, another terminal) must find the retired version's files
    already gone, or the cleanup deletes them under its next docker-compose call."""
    real_run = rolling.run

    async def winds_down_slowly(r, t) -> None:  # type: ignore[no-untyped-def]
        await real_run(r, t)
        await asyncio.sleep(1.0)  # still inside the task, the phase already "completed"

    monkeypatch.setattr(rolling, "run", winds_down_slowly)
    cleaned: list[float] = []
    store = RolloutStore(tmp_path)
    rollouts = ComposeRollouts(
        MemoryTarget(),
        lambda spec: None,
        store,
        lambda service: cleaned.append(time.monotonic()),
    )
    rollouts.start(RolloutSpec(service="orders", version="v2", strategy="rolling"))

    deadline = time.monotonic() + 20
    while True:
        # This process's view, and the record another terminal reads.
        seen_here = rollouts.get("orders")
        record = store.record("orders")
        assert seen_here is not None
        for view in (seen_here, record.status if record is not None else None):
            if view is not None and view.finished:
                assert cleaned, f"{view.phase} was said before the cleanup ran"
        if seen_here.finished:
            break
        assert time.monotonic() < deadline, "the rollout never finished"
        time.sleep(0.02)
    assert seen_here.phase == "completed", seen_here.message
    record = store.record("orders")
    assert record is not None and record.status.phase == "completed"
    assert not rollouts.active("orders")
