"""The supervisor and the console load none of the clients they never use at start-up: each
of these libraries costs every process that imports it megabytes of RSS (issue 19's memory
target is the whole platform's sum)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What each would load only to throw away: a service's Redis client, Kafka client and its
# environment loader.
NOT_AT_START = ("redis", "aiokafka", "pydantic_settings")


@pytest.mark.parametrize("module", ["infra.local.supervisor", "infra.console.server"])
def test_the_platforms_own_processes_start_without_the_service_clients(module: str) -> None:
    code = (
        f"import json, sys, {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert module.split(".")[0] in loaded
    assert not loaded & set(NOT_AT_START), f"{module} imports {sorted(loaded & set(NOT_AT_START))}"


def test_the_error_middleware_still_answers_503_for_redis_errors_once_redis_is_loaded() -> None:
    code = (
        "import services.common.middleware as m, redis.exceptions as e; "
        "print(m._unavailable(e.ConnectionError()), m._unavailable(e.TimeoutError()), "
        "m._unavailable(OSError()), m._unavailable(ValueError()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "False"]
