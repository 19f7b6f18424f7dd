"""The notifications app: the kit's app with notifications' routes, handler, store and the
live feed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.common.app import LIFECYCLE, REDIS, create_app
from services.notifications.api import NotificationsApi
from services.notifications.feed import Feed
from services.notifications.handlers import handlers
from services.notifications.settings import NotificationsSettings
from services.notifications.store import NotificationsStore

DESCRIPTION = (
    "Records one notification per terminal order (order.confirmed or order.cancelled) and "
    "streams new ones to clients as Server-Sent Events, from any instance."
)


def build(settings: NotificationsSettings) -> web.Application:
    store = NotificationsStore(settings.NOTIFICATIONS_FEED_MAXLEN)
    feed = Feed()
    api = NotificationsApi(store, feed, settings.NOTIFICATIONS_HEARTBEAT)
    app = create_app(
        settings, routes=api.routes(), handlers=handlers(store), description=DESCRIPTION
    )

    async def attach(app: web.Application) -> AsyncIterator[None]:
        store.attach(app[REDIS])
        feed.start(app[REDIS])
        # Open streams would hold the shutdown for its whole grace period: end them as soon
        # as draining starts (clients reconnect to another instance with Last-Event-ID).
        app[LIFECYCLE].drain_hooks.append(feed.close)
        yield
        await feed.stop()

    # After the kit's contexts: Redis is open. The kit does not await between starting the
    # consumer task and entering this context, so handlers never run before it.
    app.cleanup_ctx.append(attach)
    return app
