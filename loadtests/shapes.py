"""Load shapes: how many users run over time. ``LOAD_SHAPE`` picks one (``chosen``).

Locust runs every non-abstract ``LoadTestShape`` class it finds in the locustfile's namespace,
so the locustfile imports this module (never the classes) and exposes only the chosen one.
Each shape reads its parameters from the environment when Locust instantiates it, and
returns None at ``LOAD_DURATION`` so the run ends by itself. In open-loop mode every user is
an arrival source, so a shape of users is a shape of the arrival rate too.

| shape | users over time |
|---|---|
| steady | ``LOAD_USERS``, started at ``LOAD_SPAWN_RATE`` users/s |
| step | ``LOAD_STEP_USERS`` more every ``LOAD_STEP_EVERY`` s, up to ``LOAD_USERS`` |
| spike | ``LOAD_USERS``, ``LOAD_SPIKE_USERS`` from ``LOAD_SPIKE_AT`` for ``LOAD_SPIKE_DURATION`` |
| soak | ``LOAD_USERS`` reached linearly over ``LOAD_RAMP`` s, then held (one hour by default) |
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from locust import LoadTestShape

from loadtests.data import env_duration, env_float, env_int

Tick = tuple[int, float] | None


class EnvShape(LoadTestShape):
    """A shape with its parameters from the environment and a clock that tests can replace."""

    abstract = True
    default_duration = 300.0

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        super().__init__()
        env = os.environ if environ is None else environ
        self.users = env_int(env, "LOAD_USERS", 10, minimum=1)
        self.spawn_rate = env_float(env, "LOAD_SPAWN_RATE", 10.0, exclusive_minimum=True)
        self.duration = env_duration(env, "LOAD_DURATION", self.default_duration)
        self.configure(env)

    def configure(self, env: Mapping[str, str]) -> None:
        """Read the parameters of this shape."""

    def reset_time(self) -> None:
        self.start_time = self._clock()

    def get_run_time(self) -> float:
        return self._clock() - self.start_time

    def tick(self) -> Tick:
        elapsed = self.get_run_time()
        if elapsed >= self.duration:
            return None
        return self.at(elapsed)

    def at(self, elapsed: float) -> tuple[int, float]:
        raise NotImplementedError


class SteadyShape(EnvShape):
    def at(self, elapsed: float) -> tuple[int, float]:
        return self.users, self.spawn_rate


class StepShape(EnvShape):
    def configure(self, env: Mapping[str, str]) -> None:
        self.step_users = env_int(env, "LOAD_STEP_USERS", 5, minimum=1)
        self.step_every = env_duration(env, "LOAD_STEP_EVERY", 30.0)

    def at(self, elapsed: float) -> tuple[int, float]:
        steps = int(elapsed // self.step_every) + 1
        # A step is a step: its users start within a second (or faster at LOAD_SPAWN_RATE).
        return min(self.users, steps * self.step_users), max(self.spawn_rate, self.step_users)


class SpikeShape(EnvShape):
    def configure(self, env: Mapping[str, str]) -> None:
        self.spike_users = env_int(env, "LOAD_SPIKE_USERS", 5 * self.users, minimum=1)
        self.spike_at = env_duration(env, "LOAD_SPIKE_AT", 60.0)
        self.spike_duration = env_duration(env, "LOAD_SPIKE_DURATION", 30.0)

        # A spike is sudden: every extra user within a second (and gone within one after).
        self.sudden_rate = max(self.spawn_rate, abs(self.spike_users - self.users))

    def at(self, elapsed: float) -> tuple[int, float]:
        if self.spike_at <= elapsed < self.spike_at + self.spike_duration:
            return self.spike_users, self.sudden_rate
        return self.users, self.sudden_rate


class SoakShape(EnvShape):
    default_duration = 3600.0

    def configure(self, env: Mapping[str, str]) -> None:
        self.ramp = env_duration(env, "LOAD_RAMP", 60.0)

    def at(self, elapsed: float) -> tuple[int, float]:
        # Locust spawns at the rate until the target: users / ramp reaches it after the ramp.
        return self.users, self.users / self.ramp


SHAPES: dict[str, type[EnvShape]] = {
    "steady": SteadyShape,
    "step": StepShape,
    "spike": SpikeShape,
    "soak": SoakShape,
}


def chosen(environ: Mapping[str, str]) -> type[EnvShape] | None:
    """The shape ``LOAD_SHAPE`` names; None without it (plain ``-u``/``-r``/``-t`` apply)."""
    name = environ.get("LOAD_SHAPE", "").strip().lower()
    if not name:
        return None
    if name not in SHAPES:
        raise SystemExit(f"loadtests: LOAD_SHAPE must be one of {', '.join(SHAPES)}, got {name!r}")
    return SHAPES[name]
