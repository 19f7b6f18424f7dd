"""The inventory app: the kit's app with inventory's routes, handlers, store and seeding."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import TypeAdapter
from redis.exceptions import RedisError

from services.common.app import LIFECYCLE, METRICS, OUTBOX, REDIS, ReadinessCheck, create_app
from services.common.backoff import Backoff, sleep_unless
from services.common.kafka.redrive import RedriveLoop
from services.common.redis import REDIS_UNAVAILABLE
from services.common.turns import TurnLoop
from services.inventory.api import InventoryApi
from services.inventory.handlers import Replays, handlers
from services.inventory.models import Product
from services.inventory.redrive import redrive_loop
from services.inventory.restock import restock_loop
from services.inventory.settings import InventorySettings
from services.inventory.store import InventoryStore

log = logging.getLogger(__name__)

CATALOG_FILE = Path(__file__).with_name("catalog.json")

DESCRIPTION = (
    "Owns the catalogue and the stock: reserves every line of an order or none (atomically, "
    "in Lua), commits the reservation when the order is paid and releases it when the payment "
    "failed. Stock never goes negative. Reservations left waiting are announced again "
    "(re-drive), and a repeated order gets its recorded outcome again (replay)."
)


def load_catalog(path: Path = CATALOG_FILE) -> list[Product]:
    return TypeAdapter(list[Product]).validate_python(json.loads(path.read_text()))


async def _keep_seeded(
    store: InventoryStore,
    catalog: list[Product],
    settings: InventorySettings,
    seeded: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Seed at start-up, retrying while Redis is unreachable (start-up does not wait); then
    seed again whenever the catalogue is gone: a Redis that restarted empty (persistence
    off, or a new one) must not leave the shop refusing every SKU until a restart."""
    backoff = Backoff(base=0.2, cap=5.0)
    while not stop.is_set():
        try:
            if not seeded.is_set() or not await store.has_catalog():
                if seeded.is_set():
                    log.warning("the catalogue is gone from Redis: seeding it again")
                await store.seed(catalog, settings.INVENTORY_INITIAL_STOCK)
                seeded.set()
                log.info("catalogue seeded", extra={"skus": len(catalog)})
        except (RedisError, *REDIS_UNAVAILABLE) as exc:
            delay = backoff.next()
            log.warning("cannot reach Redis for the catalogue: %s; retrying in %.2fs", exc, delay)
            await sleep_unless(stop, delay)
            continue
        backoff.reset()
        await sleep_unless(stop, settings.INVENTORY_CATALOG_CHECK)


def _is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return event.is_set()

    return probe


def build(settings: InventorySettings) -> web.Application:
    catalog = load_catalog()  # a broken catalogue file stops the start, not the first order
    store = InventoryStore(redrive_after=settings.SAGA_REDRIVE_AFTER)
    api = InventoryApi(store, settings)
    replays = Replays()
    app = create_app(
        settings, routes=api.routes(), handlers=handlers(store, replays), description=DESCRIPTION
    )
    replays.register(app[METRICS])

    async def attach_and_seed(app: web.Application) -> AsyncIterator[None]:
        store.attach(app[REDIS])
        seeded = asyncio.Event()
        stop = asyncio.Event()
        # Not ready until the catalogue is in Redis: orders validates SKUs against it.
        app[LIFECYCLE].checks["catalog"] = ReadinessCheck(_is_set(seeded))
        task = asyncio.create_task(_keep_seeded(store, catalog, settings, seeded, stop))
        redriver = redrive_loop(settings, store, app[OUTBOX], app[REDIS], app[METRICS])
        # Stopped as soon as draining starts (the restock too): what their last sweep staged
        # is still flushed by the outbox relay, which stops later.
        app[LIFECYCLE].drain_hooks.append(redriver.stop)
        redriver.start()
        loops: list[RedriveLoop | TurnLoop] = [redriver]
        if settings.INVENTORY_RESTOCK is not None:
            skus = [product.sku for product in catalog]
            restocker = restock_loop(
                app[REDIS],
                app[OUTBOX],
                app[METRICS],
                settings.INVENTORY_RESTOCK,
                skus,
                settings.instance_id,
            )
            app[LIFECYCLE].drain_hooks.append(restocker.stop)
            restocker.start()
            loops.append(restocker)
        yield
        for loop in loops:
            await loop.stop()
        stop.set()
        await task

    # After the kit's contexts: Redis is open. The kit does not await between starting the
    # consumer task and entering this context, so handlers never run before it.
    app.cleanup_ctx.append(attach_and_seed)
    return app
