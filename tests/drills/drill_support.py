"""What the drill and lesson tests share: ``meshctl`` as a user runs it, a platform of their
own on the local runtime, and an outline of a report page."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from infra.process import free_port

MESHCTL = [sys.executable, "-m", "infra.meshctl"]


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def local_platform(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[dict[str, str]]:
    """``meshctl up`` in a state folder of its own on a free gateway port; down at the end."""
    home = tmp_path_factory.mktemp(name)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")
    }
    env.update(MESH_HOME=str(home), GATEWAY_PORT=str(free_port()), RUNTIME="local")
    up = meshctl(env, "up")
    assert up.returncode == 0, up.stderr[-2000:]
    yield env
    meshctl(env, "down")


class Outline(HTMLParser):
    """The ids of a page's sections and paragraphs, in order, and how many SVGs it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident and tag in ("section", "p"):
            self.ids.append(ident)
        self.svgs += tag == "svg"
