"""The HTTP API of notifications: list them, or follow them live (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from services.common.openapi import Header, Route
from services.common.validation import read_query
from services.notifications.feed import Feed, FeedEntry, entry_key
from services.notifications.models import (
    Notification,
    NotificationList,
    NotificationQuery,
    StreamQuery,
)
from services.notifications.store import NotificationsStore

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Browsers' EventSource reconnects after this many milliseconds (sent once per stream).
RETRY_MS = 2000
LAST_EVENT_ID = Header(
    "Last-Event-ID",
    "Resume after this event id (what a reconnecting EventSource sends by itself)",
    schema={"type": "string", "maxLength": 64},
)
NO_CACHE = Header(
    "Cache-Control", "no-cache", required=True, schema={"type": "string", "const": "no-cache"}
)


class NotificationsApi:
    def __init__(self, store: NotificationsStore, feed: Feed, heartbeat: float) -> None:
        self._store = store
        self._feed = feed
        self._heartbeat = heartbeat

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/notifications",
                self.list,
                "Notifications of an order, of a customer, or (neither given) the newest of "
                "all, newest first",
                query=NotificationQuery,
                response=NotificationList,
            ),
            Route(
                "GET",
                "/notifications/stream",
                self.stream,
                "Server-Sent Events: each new notification as `event: <kind>` with the JSON "
                "in `data:` (the schema is one event's data) and the resume position in "
                "`id:` (send it back as Last-Event-ID); a comment line every "
                "NOTIFICATIONS_HEARTBEAT. The stream stays open until the client leaves",
                query=StreamQuery,
                response=Notification,
                response_content_type="text/event-stream",
                request_headers=(LAST_EVENT_ID,),
                headers=(NO_CACHE,),
            ),
        ]

    async def list(self, request: web.Request) -> web.Response:
        query = read_query(request, NotificationQuery)
        if query.order_id is not None:
            found = await self._store.of_order(query.order_id)
            if query.customer_id is not None:
                found = [n for n in found if n.customer_id == query.customer_id]
        elif query.customer_id is not None:
            found = await self._store.of_customer(query.customer_id, query.limit)
        else:
            found = await self._store.latest(query.limit)
        body = NotificationList(notifications=found).model_dump_json()
        return web.Response(text=body, content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        query = read_query(request, StreamQuery)
        last_event_id = request.headers.get("Last-Event-ID", "")
        subscription = self._feed.subscribe()  # before the replay, so nothing falls between
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
                }
            )
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            sent = (0, 0)
            if _STREAM_ID.match(last_event_id):
                sent = entry_key(last_event_id)
                for missed in await self._feed.since(last_event_id):
                    sent = await self._send(response, query, missed)
            while True:
                try:
                    entry = await asyncio.wait_for(subscription.queue.get(), self._heartbeat)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if entry is None:
                    break  # draining, or this client fell too far behind
                if entry_key(entry.id) > sent:
                    sent = await self._send(response, query, entry)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._feed.unsubscribe(subscription)
        return response

    @staticmethod
    async def _send(
        response: web.StreamResponse, query: StreamQuery, entry: FeedEntry
    ) -> tuple[int, int]:
        notification = entry.notification
        if query.matches(notification):
            frame = (
                f"id: {entry.id}\nevent: {notification.kind}\n"
                f"data: {notification.model_dump_json()}\n\n"
            )
            await response.write(frame.encode())
        return entry_key(entry.id)
