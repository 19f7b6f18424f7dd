"""Which runtime is up right now, for meshctl's default when ``RUNTIME`` is unset: a user who
ran ``make up`` (local) on a machine with Docker must not get an empty compose project from
``meshctl status``, and the other way round."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from infra.compose.project import ComposeProject
from infra.embedded import mesh_home
from infra.runtime.base import RuntimeFailure

DOCKER_TIMEOUT = 5.0


def compose_running(home: Path | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """The project of ``make up RUNTIME=compose`` has a running container; False without an
    engine, fast."""
    env = os.environ if environ is None else environ
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        project = ComposeProject.from_state(home or mesh_home(env), env)
        done = subprocess.run(
            [docker, "ps", "-q", "--filter", project.label, "--filter", "status=running"],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT,
            check=False,
        )
    except (RuntimeFailure, OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def running_runtime(
    home: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """``local`` when its supervisor answers, ``compose`` when its project has running
    containers, else None (nothing runs). Local first: it is the cheaper question."""
    from infra.local.runtime import LocalRuntime  # the local runtime imports much; only here

    env = dict(os.environ if environ is None else environ)
    home = home or mesh_home(env)
    if LocalRuntime(home, env).running():
        return "local"
    if compose_running(home, env):
        return "compose"
    return None
