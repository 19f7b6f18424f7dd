"""infra.k8s.seed_weights (the init container of orders-v2 and payments-v2) against the
project's development registry: it creates the key, never overwrites it, waits for Consul."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import consul

from infra.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def seed(
    tmp_path: Path, address: str, weights: object, *extra: str
) -> subprocess.CompletedProcess[str]:
    file = tmp_path / "weights.json"
    file.write_text(json.dumps(weights) if not isinstance(weights, str) else weights)
    argv = [sys.executable, "-m", "infra.k8s.seed_weights", "--service=orders", f"--file={file}"]
    env = {"CONSUL_HTTP_ADDR": address, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [*argv, *extra], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False
    )


def test_creates_the_key_and_never_overwrites_it(
    tmp_path: Path, registry: str, consul_kv: consul.Consul
) -> None:
    first = seed(tmp_path, registry, {"v1": 90, "v2": 10})
    assert first.returncode == 0, first.stderr
    _, entry = consul_kv.kv.get("mesh/traffic/orders")
    assert json.loads(entry["Value"]) == {"v1": 90, "v2": 10}
    consul_kv.kv.put("mesh/traffic/orders", '{"v1": 50, "v2": 50}')  # a canary's step
    again = seed(tmp_path, registry, {"v1": 90, "v2": 10})
    assert again.returncode == 0 and "kept as it is" in again.stdout
    _, entry = consul_kv.kv.get("mesh/traffic/orders")
    assert json.loads(entry["Value"]) == {"v1": 50, "v2": 50}


def test_bad_weights_and_an_absent_consul_are_one_line(
    tmp_path: Path, registry: str, consul_kv: consul.Consul
) -> None:
    bad = seed(tmp_path, registry, {"v1": 0, "v2": 0})
    assert bad.returncode == 2 and "at least one weight must be above 0" in bad.stderr
    assert consul_kv.kv.get("mesh/traffic/orders")[1] is None
    nobody = f"http://127.0.0.1:{free_port()}"
    gone = seed(tmp_path, nobody, {"v1": 100, "v2": 0}, "--wait=1")
    assert gone.returncode == 1 and "gave up after 1s" in gone.stderr
