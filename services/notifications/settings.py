"""Settings of the notifications service (environment variables; the kit's plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import Duration, ServiceSettings


class NotificationsSettings(ServiceSettings):
    SERVICE_NAME: str = "notifications"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8104
    # A comment line on every open stream this often, so proxies keep idle streams open.
    NOTIFICATIONS_HEARTBEAT: Duration = 15.0
    # Approximate length of the Redis stream that feeds /notifications/stream (and resumes).
    NOTIFICATIONS_FEED_MAXLEN: Annotated[int, Field(ge=100)] = 10_000
