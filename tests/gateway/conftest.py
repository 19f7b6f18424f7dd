"""Fixtures of the gateway's tests: a gateway process per module, echo upstreams per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gw_support import Fleet, Gateway, start_gateway

from infra.embedded import Endpoints


@pytest.fixture(scope="module")
def gateway(infra: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(infra.env(), tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.process.stop(timeout=10)


@pytest.fixture
def fleet(infra: Endpoints, tmp_path: Path) -> Iterator[Fleet]:
    upstreams = Fleet(infra.env(), tmp_path)
    yield upstreams
    upstreams.stop_all()
