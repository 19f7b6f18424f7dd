"""The contract runs can fail: the same schemathesis run that the platform's documents pass
fails on a service answering a status its document does not declare (a real kit service
process on loopback, the real schemathesis CLI)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from contract_support import Run, run_schemathesis

from infra.process import ManagedProcess, free_port, wait_until

LIAR = Path(__file__).with_name("liar_service.py")


def _run_against(tmp_path: Path, status: str) -> Run:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LIAR_STATUS": status, "OTEL_SDK_DISABLED": "true"}
    env["MESH_TRACES_DIR"] = str(tmp_path / "traces")
    process = ManagedProcess(
        "liar", [sys.executable, str(LIAR)], env=env, log_path=tmp_path / "log"
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{port}/openapi.json"

        def document() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=2) as r:
                found: dict[str, Any] = json.loads(r.read())
                return found

        doc = wait_until(document, timeout=20, what="liar up", alive=process.alive)
        return run_schemathesis(f"liar-{status or 'honest'}", url, doc, tmp_path, max_examples=5)
    finally:
        process.stop(timeout=5)


@pytest.mark.parametrize("status", ["", "409"])
def test_an_undeclared_status_fails_the_run(tmp_path: Path, status: str) -> None:
    run = _run_against(tmp_path, status)
    print(run.summary())
    if not status:
        assert run.passed, run.output[-4000:]
        return
    assert not run.passed
    titles = {failure["title"] for failure in run.failures}
    assert "Undocumented status code" in titles, titles
