"""Fixtures of the local runtime's tests: a platform per test, on the session's infra.

Each test gets its own state folder, catalogue (service names with a random tag), gateway
port and supervisor; the Kafka, Redis and Consul of the session are reused as external parts.
Whatever happens in the test, the platform is stopped and every process it started is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_support import LocalPlatform, PlatformFactory, make_platform

from infra.embedded import Endpoints


@pytest.fixture
def new_platform(infra: Endpoints, tmp_path: Path) -> Iterator[PlatformFactory]:
    made: list[LocalPlatform] = []

    def factory(start: bool = True, **options: object) -> LocalPlatform:
        platform = make_platform(tmp_path / f"p{len(made)}", infra.env(), **options)  # type: ignore[arg-type]
        made.append(platform)
        if start:
            result = platform.meshctl("up")
            assert result.returncode == 0, result.stderr + result.stdout
        return platform

    yield factory
    for platform in made:
        platform.stop()


@pytest.fixture
def platform(new_platform: PlatformFactory) -> LocalPlatform:
    return new_platform()
