"""A small kit-based service the local runtime's tests run under their own names.

Every path answers ``{"version", "instance"}``; ``?delay_ms=N`` waits first (requests in
flight for the autoscaler). Settings a version file can give it:

    FAKE_ERROR_RATE=0.3       that share of answers is a 500 (a faulty version)
    FAKE_LATENCY_MS=200       every answer waits this long (a slow version)
    FAKE_CRASH=1              exit 3 at start (a version that crash-loops)
    FAKE_STARTUP_DELAY=30     sleep this long before serving (never ready in a test)
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Annotated

from aiohttp import web
from pydantic import Field

from services.common.app import SETTINGS, create_app, run
from services.common.settings import ServiceSettings


class FakeSettings(ServiceSettings):
    SERVICE_NAME: str = "fake"
    FAKE_ERROR_RATE: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    FAKE_LATENCY_MS: Annotated[int, Field(ge=0)] = 0
    FAKE_CRASH: bool = False
    FAKE_STARTUP_DELAY: Annotated[float, Field(ge=0)] = 0.0


async def answer(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    assert isinstance(settings, FakeSettings)
    delay = settings.FAKE_LATENCY_MS + int(request.query.get("delay_ms", "0"))
    if delay:
        await asyncio.sleep(delay / 1000)
    if settings.FAKE_ERROR_RATE and random.random() < settings.FAKE_ERROR_RATE:
        return web.json_response({"error": {"code": "fake", "message": "faulty"}}, status=500)
    return web.json_response(
        {"version": settings.SERVICE_VERSION, "instance": settings.instance_id}
    )


def build(settings: FakeSettings) -> web.Application:
    if settings.FAKE_CRASH:
        print("fake: crashing on purpose (FAKE_CRASH)", flush=True)
        sys.exit(3)
    if settings.FAKE_STARTUP_DELAY:
        time.sleep(settings.FAKE_STARTUP_DELAY)
    app = create_app(settings, use_redis=False, use_kafka=False, faults=False)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


if __name__ == "__main__":
    run(build, FakeSettings)
