"""What a rollout strategy needs from the runtime, and nothing more.

The strategies (rolling, blue-green, canary) are written against :class:`Target`, not against
processes: the local supervisor implements it with its fleet and Consul; a compose runtime
can implement it with containers and reuse the strategies as they are.
"""

from __future__ import annotations

from typing import Protocol


class AbortRollout(Exception):
    """Stop the rollout and roll back; the message says why (one line)."""


class Target(Protocol):
    def stable(self, service: str) -> str: ...

    def set_stable(self, service: str, version: str) -> None: ...

    def desired(self, service: str, version: str) -> int: ...

    def set_desired(self, service: str, version: str, count: int) -> None: ...

    def smoke_path(self, service: str) -> str | None: ...

    async def wait_ready(self, service: str, version: str, count: int, timeout: float) -> None:
        """Until ``count`` replicas of the version pass in Consul and the gateway routes to
        them; raises :class:`AbortRollout` on timeout or when they keep crashing."""
        ...

    async def wait_at_most(self, service: str, version: str, count: int, timeout: float) -> None:
        """Until at most ``count`` replicas of the version exist (the others have exited)."""
        ...

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None: ...

    async def gateway_metrics(self) -> str: ...

    async def smoke(self, path: str, version: str) -> str | None:
        """One request pinned to ``version``; ``None`` if it went well, else the problem."""
        ...
