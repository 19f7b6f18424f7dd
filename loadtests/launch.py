"""How a Locust load is started against the running platform: one recipe for ``meshctl load``
(``make load``) and the console's Load button.

A load is closed loop (each user waits for its answer: ``users`` started at ``spawn_rate``)
or open loop (``arrivals`` per second per user on a fixed schedule, whatever the answers
take), optionally following a shape (``steady|step|spike|soak``, loadtests/shapes.py). Locust
runs as a child process: it patches the standard library with gevent, so it never runs in
the caller's process.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"

Mode = Literal["closed", "open"]
# The names of loadtests/shapes.py's SHAPES (that module imports Locust, which patches the
# standard library with gevent: never imported here). A test keeps the two lists equal.
SHAPES = ("steady", "step", "spike", "soak")


class LoadError(ValueError):
    """A load that cannot be started as asked; the message is one line."""


@dataclass(frozen=True)
class LoadRequest:
    mode: Mode = "closed"
    users: int = 10
    spawn_rate: float = 2.0
    arrivals: float | None = None  # open loop: arrivals per second per user
    shape: str | None = None
    duration: float | None = 60.0  # seconds; None: until stopped
    headless: bool = True
    web_port: int = 8089

    def check(self) -> None:
        if self.mode not in ("closed", "open"):
            raise LoadError(f"mode must be closed or open, got {self.mode!r}")
        if not 1 <= self.users <= 500:
            raise LoadError(f"users must be 1-500, got {self.users}")
        if self.spawn_rate <= 0:
            raise LoadError("spawn rate must be above 0 users/s")
        if self.arrivals is not None and not 0 < self.arrivals <= 100:
            raise LoadError("arrivals must be above 0 and at most 100 per second per user")
        if self.shape is not None and self.shape not in SHAPES:
            raise LoadError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if self.duration is not None and not 1 <= self.duration <= 24 * 3600:
            raise LoadError("duration must be between 1s and 24h")

    def describe(self) -> str:
        loop = (
            f"open loop, {self.users} users x {self.arrivals or 5:g} arrivals/s"
            if self.mode == "open"
            else f"closed loop, {self.users} users"
        )
        shape = f", shape {self.shape}" if self.shape else ""
        until = f" for {self.duration:g}s" if self.duration else " until stopped"
        return loop + shape + until


def locust_command(
    request: LoadRequest, gateway_url: str, api_key: str, environ: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the Locust process for ``request``."""
    request.check()
    env = dict(os.environ if environ is None else environ)
    env["MESH_API_KEY"] = api_key
    env["LOAD_MODE"] = request.mode
    if request.arrivals is not None:
        env["LOAD_USER_RATE"] = f"{request.arrivals:g}"
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    argv = [locust, "-f", str(LOCUSTFILE), "--host", gateway_url]
    if request.shape:
        # A shape sets users and time itself (from these variables).
        env.update(
            LOAD_SHAPE=request.shape,
            LOAD_USERS=str(request.users),
            LOAD_SPAWN_RATE=f"{request.spawn_rate:g}",
        )
        if request.duration:
            env["LOAD_DURATION"] = f"{request.duration:g}s"
    else:
        env.pop("LOAD_SHAPE", None)
        argv += ["-u", str(request.users), "-r", f"{request.spawn_rate:g}"]
        if request.headless and request.duration:
            argv += ["-t", f"{request.duration:g}s"]
    if request.headless:
        argv += ["--headless", "--only-summary", "--stop-timeout", "5"]
    else:
        argv += ["--web-host", "127.0.0.1", "--web-port", str(request.web_port)]
    return argv, env
