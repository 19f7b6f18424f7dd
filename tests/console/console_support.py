"""What the console tests share: the platform handle, meshctl, screenshots.

The fixtures (conftest.py) start the platform and Chromium; screenshots go to
``reports/console/`` in every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "reports" / "console"
MESHCTL = [sys.executable, "-m", "infra.meshctl"]
CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
# Chromium's own background traffic goes nowhere on these machines (closed network).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def meshctl(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Platform:
    env: dict[str, str]
    home: Path
    up: subprocess.CompletedProcess[str]
    console: str
    gateway: str
    api_key: str
    admin_token: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        base: str | None = None,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(
            (base or self.console) + path, data=data, method=method, headers=sent
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def act(self, action: str, body: Any = None) -> tuple[int, Any]:
        """An action as a script sends it: the admin token as a bearer token."""
        return self.call(
            "POST",
            f"/api/actions/{action}",
            body if body is not None else {},
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    def order(self) -> str:
        status, body = self.call(
            "POST",
            "/api/orders",
            {"customer_id": "c-console", "items": [{"sku": "SKU-002", "quantity": 1}]},
            headers={"X-API-Key": self.api_key},
            base=self.gateway,
        )
        assert status == 202, body
        return str(body["id"])


def shot(page: Any, name: str, full: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
    page.screenshot(path=str(path), full_page=full)
    return path
