"""``make test-k8s-pods``: the k8s dev overlay's pods on a real Docker engine, as their pod
specs say (``tests/k8s_pods/test_k8s_pods.py``).

1. a Docker engine: the one that answers, else one installed and started (the same code as
   ``make test-compose``); none possible -> a loud SKIPPED line and exit 0 (the only way
   this skips);
2. the project images and the compose test's stand-ins for Kafka, Redis and Consul, FROM the
   local base (cached: after ``make test-compose`` nothing is rebuilt);
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from infra.compose import engine, images  # noqa: E402
from infra.compose.stack import APP_IMAGES  # noqa: E402
from infra.runtime.base import RuntimeFailure  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    started_all = time.monotonic()
    state = Path(os.environ.get("MESH_HOME") or ROOT / ".mesh") / "docker"
    state.mkdir(parents=True, exist_ok=True)

    say("==> docker engine")
    had_pidfile = (state / "dockerd.pid").exists()
    was_up = engine.engine() is not None
    try:
        found = engine.ensure_engine(state, say)
    except RuntimeFailure as exc:
        bar = "!" * 78
        say(f"\n{bar}\nSKIPPED: no Docker engine could be started: {exc}\n{bar}\n")
        return 0
    started_engine = not was_up and not had_pidfile and (state / "dockerd.pid").exists()
    say(f"    engine {found.server}, docker CLI {found.client}")

    rc = 1
    took: dict[str, float] = {}
    try:
        say("==> images (cached when make test-compose built them)")
        t = time.monotonic()
        images.build(
            [*APP_IMAGES, *images.STAND_INS],
            base="local",
            state_dir=state,
            environ=dict(os.environ),
            progress=say,
        )
        took["images"] = time.monotonic() - t

        say("==> pytest tests/k8s_pods")
        t = time.monotonic()
        argv = [sys.executable, "-m", "pytest", "tests/k8s_pods", "-p", "no:cacheprovider"]
        argv += ["-ra", "--timeout=600", *shlex.split(os.environ.get("PYTEST_ARGS", ""))]
        rc = subprocess.call(argv, cwd=ROOT, env={**os.environ, "MESH_K8S_PODS": "1"})
        took["tests"] = time.monotonic() - t
    except RuntimeFailure as exc:
        say(f"test-k8s-pods: {exc}")
        rc = 1
    finally:
        if started_engine and os.environ.get("MESH_KEEP_ENGINE") != "1":
            engine.stop_started_engine(state)
    figures = " ".join(f"{k} {v:.0f}s" for k, v in took.items())
    say(f"==> durations: {figures}, total {time.monotonic() - started_all:.0f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
