"""The images of the compose runtime: the project's (built here from the repository root) and
the infrastructure's (pulled, or their local stand-ins built).

    python -m infra.compose.images [--base IMAGE|local] [--local-infra] [NAME...]

(``infra/docker/build-images.sh`` runs this.) Images are tagged ``mesh-demo/<name>:<tag>``,
the tag being ``MESH_VERSION`` or the version in pyproject.toml. pip inside the build uses the
host's index settings (``PIP_*``, then ``pip config list``; http(s) only, a container cannot
read a file:// index) and the CA bundle pip trusts here (networks that re-sign TLS), and the
build runs with ``--network host``, so it reaches what the host reaches.

Pulls tell "no registry answers" (fast: the engine cannot even connect) from "a registry
answered and the pull failed" (an unknown tag, a login) and from "slow" (progress keeps
coming): only the first may make ``up`` fall back to the stand-ins.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.compose.engine import Builder, builder, ensure_engine
from infra.compose.project import REPO_ROOT, image_tag
from infra.runtime.base import Progress, RuntimeFailure, quiet

PREFIX = "mesh-demo"
LOCAL_BASE = f"{PREFIX}/base:bookworm"
DEFAULT_BASE = "python:3.12-slim"
DOCKERFILES = {
    "orders": "services/orders/Dockerfile",
    "inventory": "services/inventory/Dockerfile",
    "payments": "services/payments/Dockerfile",
    "notifications": "services/notifications/Dockerfile",
    "gateway": "gateway/Dockerfile",
    "locust": "loadtests/Dockerfile",
    # the stand-ins of docker-compose.test.yml
    "tansu": "infra/docker/images/tansu/Dockerfile",
    "redis": "infra/docker/images/redis/Dockerfile",
    "consul-dev": "infra/docker/images/consul-dev/Dockerfile",
}
# lesson-fat-image: orders' venv on a chosen final base (infra/docker/images/orders-fat), and
# the fat base it builds on: python:3.12 (not slim) where a registry answers, else made locally.
LESSON_DOCKERFILE = "infra/docker/images/orders-fat/Dockerfile"
FAT_BASE = "python:3.12"
LOCAL_FAT_BASE = f"{PREFIX}/base-fat:bookworm"
PROJECT_IMAGES = ("orders", "inventory", "payments", "notifications", "gateway", "locust")
STAND_INS = ("tansu", "redis", "consul-dev")
# The Dockerfiles read the CA bundle from this path of the build context (.dockerignore lets
# exactly this file of .mesh/ through), whatever MESH_HOME is.
CONTEXT_CA = REPO_ROOT / ".mesh" / "docker" / "pip-ca.crt"
BUILD_BASE = REPO_ROOT / "infra" / "docker" / "build-base.sh"
# A pull whose registry says nothing this long did not reach one (the engine's own dial
# timeout is shorter); once it answered, a pull takes as long as its layers take.
FIRST_ANSWER = 60.0
# What the engine says when it cannot reach a registry at all.
UNREACHABLE = (
    "dial tcp",
    "no such host",
    "connection refused",
    "network is unreachable",
    "i/o timeout",
    "tls handshake timeout",
    "client.timeout exceeded",
    "server misbehaving",
    "temporary failure in name resolution",
    "no route to host",
)


def image_name(name: str, environ: Mapping[str, str] | None = None) -> str:
    return f"{PREFIX}/{name}:{image_tag(environ)}"


def image_exists(image: str) -> bool:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


# -- pulls ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pull:
    image: str
    ok: bool
    unreachable: bool = False  # no registry answered: the only case that may fall back
    message: str = ""


def pull(image: str, progress: Progress = quiet, first_answer: float = FIRST_ANSWER) -> Pull:
    """``docker pull`` with its progress passed on; see the module docstring for outcomes."""
    child = subprocess.Popen(
        ["docker", "pull", image],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            lines.put(raw.rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    said: list[str] = []
    answered = False
    deadline = time.monotonic() + first_answer
    while True:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if not answered and time.monotonic() > deadline:
                child.kill()
                child.wait()
                return Pull(image, False, True, f"no registry answered within {first_answer:g}s")
            continue
        if line is None:
            break
        if not line:
            continue
        said.append(line)
        if "Error" not in line and not line.startswith(("error", "Using default tag")):
            answered = True
            progress(f"  {line}")
    code = child.wait()
    if code == 0:
        return Pull(image, True)
    message = said[-1][:300] if said else f"docker pull exited {code}"
    unreachable = any(mark in message.lower() for mark in UNREACHABLE)
    return Pull(image, False, unreachable and not answered, message)


# -- builds -----------------------------------------------------------------------------------
def pip_setting(variable: str, key: str, environ: Mapping[str, str]) -> str:
    """One pip setting: the PIP_* variable first, then ``pip config list`` (any scope)."""
    value = environ.get(variable, "").strip()
    if value:
        return value
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in done.stdout.splitlines():
        name, _, raw = line.partition("=")
        if name.split(".", 1)[-1] == key:
            return raw.strip().strip("'\"")
    return ""


def network_urls(value: str) -> str:
    return " ".join(u for u in value.split() if u.startswith(("http://", "https://")))


def build_args(base: str, environ: Mapping[str, str]) -> tuple[list[str], str]:
    """``--build-arg``s for every Dockerfile, and a line saying which pip index is used."""
    index = network_urls(pip_setting("PIP_INDEX_URL", "index-url", environ))
    extra = network_urls(pip_setting("PIP_EXTRA_INDEX_URL", "extra-index-url", environ))
    trusted = pip_setting("PIP_TRUSTED_HOST", "trusted-host", environ)
    args = ["--build-arg", f"BASE_IMAGE={base}"]
    for name, value in (
        ("PIP_INDEX_URL", index),
        ("PIP_EXTRA_INDEX_URL", extra),
        ("PIP_TRUSTED_HOST", trusted),
    ):
        if value:
            args += ["--build-arg", f"{name}={value}"]
    ca = pip_setting("PIP_CERT", "cert", environ) or "/etc/ssl/certs/ca-certificates.crt"
    CONTEXT_CA.parent.mkdir(parents=True, exist_ok=True)
    if Path(ca).is_file():
        shutil.copyfile(ca, CONTEXT_CA)
    else:
        CONTEXT_CA.unlink(missing_ok=True)
    return args, f"pip index: {index or 'PyPI'}" + (f" + {extra}" if extra else "")


def _local_base(image: str, kind: str, state_dir: Path, progress: Progress) -> str:
    if not image_exists(image):
        # Linux-only by nature (debootstrap, chroot): the machines that cannot pull.
        progress(f"building the local {kind} base image {image} (debootstrap)")
        env = {**os.environ, "MESH_HOME": str(state_dir.parent)}
        done = subprocess.run(
            ["bash", str(BUILD_BASE), image, kind], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeFailure(lines[-1] if lines else "build-base.sh failed")
    return image


def resolve_base(base: str, state_dir: Path, progress: Progress) -> str:
    """The BASE_IMAGE to build FROM: present, pulled, or (``local``) made by debootstrap."""
    if base in ("local", LOCAL_BASE):
        return _local_base(LOCAL_BASE, "slim", state_dir, progress)
    if image_exists(base):
        return base
    progress(f"pulling {base}")
    result = pull(base, progress)
    if not result.ok:
        raise RuntimeFailure(
            f"base image {base} is not here and cannot be pulled ({result.message}); "
            "BASE_IMAGE=local builds FROM a local Debian base"
        )
    return base


def resolve_fat_base(base: str, state_dir: Path, progress: Progress) -> str:
    """The fat base beside ``base``: python:3.12 beside python:3.12-slim, the local fat
    debootstrap base (cached like the slim one) beside the local slim one."""
    if base in ("local", LOCAL_BASE):
        return _local_base(LOCAL_FAT_BASE, "fat", state_dir, progress)
    return resolve_base(FAT_BASE, state_dir, progress)


def base_build_seconds(image: str) -> float | None:
    """How long build-base.sh took to make a local base (its label), if it says."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format",
         '{{index .Config.Labels "mesh.demo/base-build-seconds"}}', image],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    try:
        return float(done.stdout.strip())
    except ValueError:
        return None


def build_lesson_image(
    image: str,
    *,
    base: str,
    final_base: str,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
    progress: Progress = quiet,
) -> float:
    """Build orders' venv on ``final_base`` (lesson-fat-image) as ``image``; the seconds the
    build took. Its final stage is rebuilt every time (a new stamp), its builder stage is the
    project images' own (from the layer cache)."""
    env = dict(os.environ if environ is None else environ)
    chosen = builder(ensure_engine(state_dir, progress, start=False), env)
    args, _index = build_args(resolve_base(base, state_dir, progress), env)
    args += ["--build-arg", f"FINAL_BASE_IMAGE={final_base}"]
    args += ["--build-arg", f"MESH_BUILD_STAMP={time.time_ns()}"]
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / f"build-{image.replace('/', '-').replace(':', '-')}.log"
    return _build_one(image, LESSON_DOCKERFILE, args, chosen, env, log, progress)


def _build_one(
    image: str,
    dockerfile: str,
    args: list[str],
    chosen: Builder,
    env: Mapping[str, str],
    log: Path,
    progress: Progress,
) -> float:
    began = time.monotonic()
    argv = [
        "docker", "build", "--network", "host", *chosen.flags(), *args,
        "-f", str(REPO_ROOT / dockerfile), "-t", image, str(REPO_ROOT),
    ]  # fmt: skip
    with open(log, "w") as out:
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env, **chosen.env()}
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        for line in tail:
            progress(f"  | {line}")
        raise RuntimeFailure(f"building {image} failed (full log: {log})")
    took = time.monotonic() - began
    progress(f"  {image}  {_size(image)}  ({took:.0f}s)")
    return took


def build(
    names: Sequence[str],
    *,
    base: str,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
    progress: Progress = quiet,
    chosen: Builder | None = None,
) -> None:
    """Build these images FROM ``base`` (an image, or ``local``); one log per image in
    ``state_dir`` (``build-<name>.log``), its tail shown when a build fails."""
    env = dict(os.environ if environ is None else environ)
    unknown = [n for n in names if n not in DOCKERFILES]
    if unknown:
        raise RuntimeFailure(f"unknown image {unknown[0]!r} (known: {', '.join(DOCKERFILES)})")
    found = ensure_engine(state_dir, progress, start=False)
    chosen = chosen or builder(found, env)
    base = resolve_base(base, state_dir, progress)
    args, index = build_args(base, env)
    state_dir.mkdir(parents=True, exist_ok=True)
    progress(f"building {len(names)} images ({PREFIX}/*:{image_tag(env)}) FROM {base}")
    progress(f"  {index}; {chosen.why}")
    started = time.monotonic()
    for name in names:
        log = state_dir / f"build-{name}.log"
        _build_one(image_name(name, env), DOCKERFILES[name], args, chosen, env, log, progress)
    progress(f"  all images built in {time.monotonic() - started:.0f}s")


def _size(image: str) -> str:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        return f"{int(done.stdout.strip()) / 1e6:.0f} MB"
    except ValueError:
        return "? MB"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-images.sh", description="Build the project images (and the stand-ins)."
    )
    parser.add_argument(
        "--base",
        default=os.environ.get("BASE_IMAGE") or DEFAULT_BASE,
        help=f"BASE_IMAGE of every Dockerfile (default {DEFAULT_BASE}), or 'local'",
    )
    parser.add_argument(
        "--local-infra",
        action="store_true",
        help=f"also build the stand-ins of docker-compose.test.yml ({', '.join(STAND_INS)})",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(DOCKERFILES))
    args = parser.parse_args(argv)
    names = args.names or [*PROJECT_IMAGES, *(STAND_INS if args.local_infra else ())]
    home = Path(os.environ.get("MESH_HOME") or REPO_ROOT / ".mesh")
    try:
        build(names, base=args.base, state_dir=home / "docker", progress=_stderr)
    except RuntimeFailure as exc:
        print(f"build-images: {exc}", file=sys.stderr)
        return 1
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
