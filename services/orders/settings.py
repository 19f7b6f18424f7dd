"""Settings of the orders service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import Duration, ServiceSettings


class OrdersSettings(ServiceSettings):
    SERVICE_NAME: str = "orders"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8101
    # An order is at most 50 short lines: 64 KiB is generous and keeps abuse cheap.
    MAX_BODY_BYTES: Annotated[int, Field(ge=1024)] = 65_536
    # How long an Idempotency-Key is remembered.
    ORDERS_IDEMPOTENCY_TTL: Duration = 24 * 3600.0
    # How long the catalogue read from Redis is trusted before it is read again.
    ORDERS_CATALOG_TTL: Duration = 5.0
