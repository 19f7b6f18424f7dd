"""A real local platform with its console, and a real Chromium to look at it.

``meshctl up`` starts everything in a state folder of this module (its own tansu, valkey and
development registry, the gateway and the four services, and the console); Debian's
Chromium is driven by Playwright for Python with ``executable_path`` set, so nothing
downloads a browser. Screenshots go to ``reports/console/`` in every run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import CHROMIUM, CHROMIUM_ARGS, Platform, meshctl

from infra.process import free_port


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("console")
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "KAFKA_BOOTSTRAP_SERVERS",
            "REDIS_URL",
            "CONSUL_HTTP_ADDR",
            "RUNTIME",
            "MESH_CONSOLE",
        )
    }
    env.update(
        MESH_HOME=str(home),
        GATEWAY_PORT=str(free_port()),
        MESH_CONSOLE_PORT=str(free_port()),
        RUNTIME="local",
    )
    up = meshctl(env, "up")
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        status = json.loads(meshctl(env, "status", "--json").stdout)
        secrets = json.loads((home / "secrets.json").read_text())
        yield Platform(
            env=env,
            home=home,
            up=up,
            console=status["console"]["url"],
            gateway=status["gateway"]["url"],
            api_key=status["gateway"]["api_key"],
            admin_token=secrets["admin_token"],
        )
    finally:
        meshctl(env, "down")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, platform: Platform) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.errors = errors
    try:
        yield page
    finally:
        context.close()
