"""What ``make test-compose`` and ``make test-k8s-pods`` share: a Docker engine for the run
(the one that answers, else one started as root on Debian; none -> a loud SKIPPED line, the
only way those runs skip), the project images FROM the local base, and the durations line.
A dockerd the run started is stopped again at the end (``MESH_KEEP_ENGINE=1`` keeps it)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.compose import engine, images  # noqa: E402
from infra.compose.stack import APP_IMAGES  # noqa: E402
from infra.runtime.base import RuntimeFailure  # noqa: E402

T = TypeVar("T")


class NoEngine(Exception):
    """No Docker engine could be had on this machine: the run skips, loudly."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def state_dir() -> Path:
    """Where the engine's pid file, the base image's cache and the logs of the runs live."""
    state = Path(os.environ.get("MESH_HOME") or ROOT / ".mesh") / "docker"
    state.mkdir(parents=True, exist_ok=True)
    return state


def skipped(why: str) -> int:
    bar = "!" * 78
    say(f"\n{bar}\nSKIPPED: no Docker engine could be started: {why}\n{bar}\n")
    return 0


@contextmanager
def docker_engine(state: Path) -> Iterator[engine.Engine]:
    """The engine for the run; raises :class:`NoEngine` when none can be had. One this run
    started (no engine answered and no earlier run's pid file) is stopped on the way out."""
    had_pidfile = (state / "dockerd.pid").exists()
    was_up = engine.engine() is not None
    try:
        found = engine.ensure_engine(state, say)
    except RuntimeFailure as exc:
        raise NoEngine(str(exc)) from exc
    started = not was_up and not had_pidfile and (state / "dockerd.pid").exists()
    say(f"    engine {found.server}, docker CLI {found.client}")
    try:
        yield found
    finally:
        if started and os.environ.get("MESH_KEEP_ENGINE") != "1":
            engine.stop_started_engine(state)


def build_images(state: Path, environ: Mapping[str, str], *, locust: bool = False) -> None:
    """The application images and the stand-ins, FROM the local base (cached between runs);
    with ``locust``, Locust's image too (the compose stack builds it when its load profile is
    asked for; the k8s pods run it from the start)."""
    images.build(
        [*APP_IMAGES, *(["locust"] if locust else []), *images.STAND_INS],
        base="local",
        state_dir=state,
        environ=dict(environ),
        progress=say,
    )


class Durations:
    """How long each step of a run took, printed as one line at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.took: dict[str, float] = {}

    def timed(self, name: str, work: Callable[[], T]) -> T:
        t = time.monotonic()
        try:
            return work()
        finally:
            self.took[name] = time.monotonic() - t

    def line(self) -> str:
        figures = " ".join(f"{k} {v:.0f}s" for k, v in self.took.items())
        return f"durations: {figures}, total {time.monotonic() - self.started:.0f}s"
