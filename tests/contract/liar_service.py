"""A kit service whose one route answers what its document says, or, with ``LIAR_STATUS``
set, a status its document does not declare: what the contract tests must catch.

    PORT=9001 LIAR_STATUS=409 python tests/contract/liar_service.py
"""

from __future__ import annotations

import os

from aiohttp import web
from pydantic import BaseModel

from services.common.app import create_app, run
from services.common.errors import json_error
from services.common.openapi import Route
from services.common.settings import ServiceSettings


class LiarSettings(ServiceSettings):
    SERVICE_NAME: str = "liar"
    CONSUL_HTTP_ADDR: str = ""


class Thing(BaseModel):
    name: str


async def thing(request: web.Request) -> web.Response:
    status = int(os.environ.get("LIAR_STATUS") or 0)
    if status:
        return json_error(status, "conflict", "not in the document")
    return web.json_response({"name": "a thing"})


def build(settings: LiarSettings) -> web.Application:
    routes = [Route("GET", "/thing", thing, "A thing", response=Thing, uses_redis=False)]
    return create_app(settings, routes=routes, use_redis=False, use_kafka=False, faults=False)


if __name__ == "__main__":
    run(build, LiarSettings)
