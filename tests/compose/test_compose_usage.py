"""infra.compose.usage without an engine: the OOM kill count from what ``docker inspect``
shows over successive looks, and the RSS read refusing a pid that is not a container's.
The engine's side (a real OOM kill under mem_limit) is test_compose_lessons.py's."""

from __future__ import annotations

import os

from infra.compose.usage import OomCounter, container_rss


def test_oom_kills_counted_from_restarts_behind_an_oom_killed_state() -> None:
    counter = OomCounter()
    assert counter.kills("a", oom_killed=False, restarts=0) == 0
    assert counter.kills("a", oom_killed=False, restarts=0) == 0
    # Killed and restarted once, then twice more between two looks.
    assert counter.kills("a", oom_killed=True, restarts=1) == 1
    assert counter.kills("a", oom_killed=True, restarts=1) == 1
    assert counter.kills("a", oom_killed=True, restarts=3) == 3
    # A restart after an exit that was not an OOM kill (the engine clears the flag).
    assert counter.kills("a", oom_killed=False, restarts=4) == 3
    # First seen already OOM-killed: at least the last exit was.
    assert counter.kills("b", oom_killed=True, restarts=5) == 1


def test_rss_only_of_a_container_process() -> None:
    # This test's own process is in no container: its cgroup does not name the id.
    assert container_rss("f" * 64, os.getpid()) is None
    assert container_rss("f" * 64, 0) is None
    assert container_rss("f" * 64, 2**22 + 12345) is None  # no such process
