"""``make test-k8s-pods``: the k8s dev overlay's pods on a real Docker engine, as their pod
specs say (``tests/k8s_pods/test_k8s_pods.py``).

1. a Docker engine (``tests/engine_runs.py``, as ``make test-compose``); none possible -> a
   loud SKIPPED line and exit 0 (the only way this skips);
2. the project images (Locust's included) and the compose test's stand-ins for Kafka, Redis
   and Consul, FROM the local base (cached: after ``make test-compose`` nothing is rebuilt);
3. ``pytest tests/k8s_pods`` with ``MESH_K8S_PODS=1``; every container and network it makes
   is labelled ``meshk8s.run=<id>`` and removed; a dockerd this run started is stopped again
   (``MESH_KEEP_ENGINE=1`` keeps it).

``MESH_IMAGE_PREFIX`` (default mesh-demo) names the images; ``PYTEST_ARGS`` adds flags.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_runs import (
    ROOT,
    Durations,
    NoEngine,
    build_images,
    docker_engine,
    say,
    skipped,
    state_dir,
)

from infra.runtime.base import RuntimeFailure


def main() -> int:
    durations = Durations()
    state = state_dir()
    say("==> docker engine")
    try:
        with docker_engine(state):
            say("==> images (cached when make test-compose built them)")
            durations.timed("images", lambda: build_images(state, os.environ, locust=True))
            say("==> pytest tests/k8s_pods")
            argv = [sys.executable, "-m", "pytest", "tests/k8s_pods", "-p", "no:cacheprovider"]
            argv += ["-ra", "--timeout=600", *shlex.split(os.environ.get("PYTEST_ARGS", ""))]
            env = {**os.environ, "MESH_K8S_PODS": "1"}
            rc = durations.timed("tests", lambda: subprocess.call(argv, cwd=ROOT, env=env))
    except NoEngine as exc:
        return skipped(str(exc))
    except RuntimeFailure as exc:
        say(f"test-k8s-pods: {exc}")
        rc = 1
    say(f"==> {durations.line()}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
