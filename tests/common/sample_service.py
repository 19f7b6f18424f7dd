"""A tiny service built with the kit, run as a real process by the kit's tests.

``POST /items`` stores an item and emits ``item.created`` on ``SAMPLE_TOPIC`` through the
outbox; the consumer handles that topic, recording each event id it handled in Redis. Event
``data`` can ask the handler to fail (``poison``) or take time (``slow_ms``).

    python tests/common/sample_service.py
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.common.admin import require_admin
from services.common.app import OUTBOX, REDIS, SETTINGS, create_app, run
from services.common.errors import ApiError
from services.common.kafka.consumer import Handler, HandlerContext
from services.common.kafka.envelope import Envelope, make_event
from services.common.openapi import Route
from services.common.settings import ServiceSettings
from services.common.validation import read_json, read_query


class SampleSettings(ServiceSettings):
    SERVICE_NAME: str = "sample"
    SAMPLE_TOPIC: str = "sample.items"
    # Prefix of every Redis key this instance writes, so tests never see each other's data.
    SAMPLE_NS: str = "sample"
    SAMPLE_CONSUME: bool = True


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=50)]
    quantity: Annotated[int, Field(ge=1, le=100)]


class ItemOut(BaseModel):
    id: str
    name: str
    quantity: int


def _settings(request: web.Request) -> SampleSettings:
    settings = request.app[SETTINGS]
    assert isinstance(settings, SampleSettings)
    return settings


async def create_item(request: web.Request) -> web.Response:
    item = await read_json(request, ItemIn)
    settings = _settings(request)
    item_id = uuid.uuid4().hex
    event = make_event("item.created", item_id, item.model_dump())
    async with request.app[REDIS].pipeline(transaction=True) as tx:
        tx.hset(
            f"{settings.SAMPLE_NS}:item:{item_id}",
            mapping={"name": item.name, "quantity": item.quantity},
        )
        request.app[OUTBOX].stage(tx, settings.SAMPLE_TOPIC, event)
        await tx.execute()
    body = ItemOut(id=item_id, **item.model_dump())
    return web.json_response(
        body.model_dump(), status=202, headers={"Location": f"/items/{item_id}"}
    )


class ItemQuery(BaseModel):
    # Lets a test keep a request in flight while the service shuts down.
    delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 0


async def get_item(request: web.Request) -> web.Response:
    query = read_query(request, ItemQuery)
    if query.delay_ms:
        await asyncio.sleep(query.delay_ms / 1000)
    item_id = request.match_info["id"]
    stored = await request.app[REDIS].hgetall(f"{_settings(request).SAMPLE_NS}:item:{item_id}")
    if not stored:
        raise ApiError(404, "not_found", f"no item {item_id}")
    return web.json_response(ItemOut.model_validate({"id": item_id, **stored}).model_dump())


async def delete_item(request: web.Request) -> web.Response:
    require_admin(request, _settings(request))
    item_id = request.match_info["id"]
    await request.app[REDIS].delete(f"{_settings(request).SAMPLE_NS}:item:{item_id}")
    return web.Response(status=204)


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals: password=hunter2")


def handler_for(settings: SampleSettings) -> Handler:
    async def on_item(event: Envelope, ctx: HandlerContext) -> None:
        if event.data.get("poison"):
            raise ValueError("poison pill")
        slow_ms = event.data.get("slow_ms")
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)
        ctx.tx.hincrby(f"{settings.SAMPLE_NS}:handled", str(event.id), 1)
        ctx.tx.rpush(f"{settings.SAMPLE_NS}:order", str(event.id))

    return on_item


def build(settings: SampleSettings) -> web.Application:
    return create_app(
        settings,
        title="sample",
        description="The kit's test service.",
        routes=[
            Route(
                "POST",
                "/items",
                create_item,
                "Create an item",
                body=ItemIn,
                response=ItemOut,
                status=202,
            ),
            Route("GET", "/items/{id}", get_item, "One item", query=ItemQuery, response=ItemOut),
            Route("DELETE", "/items/{id}", delete_item, "Remove an item (admin)", status=204),
            Route("GET", "/boom", boom, "Always fails", documented=False),
        ],
        handlers={settings.SAMPLE_TOPIC: handler_for(settings)}
        if settings.SAMPLE_CONSUME
        else None,
    )


if __name__ == "__main__":
    run(build, SampleSettings)
