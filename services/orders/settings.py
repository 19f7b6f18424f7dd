"""Settings of the orders service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import Duration, ServiceSettings

# A duration that must be more than zero (a zero interval would spin).
PositiveDuration = Annotated[Duration, Field(gt=0)]


class OrdersSettings(ServiceSettings):
    SERVICE_NAME: str = "orders"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8101
    # An order is at most 50 short lines: 64 KiB is generous and keeps abuse cheap.
    MAX_BODY_BYTES: Annotated[int, Field(ge=1024)] = 65_536
    # How long an Idempotency-Key is remembered.
    ORDERS_IDEMPOTENCY_TTL: Duration = 24 * 3600.0
    # How long the catalogue read from Redis is trusted before it is read again.
    ORDERS_CATALOG_TTL: Duration = 5.0
    # The saga re-drive (README "Re-drive"): an order still PENDING this long after its last
    # announcement is announced again; each later wait doubles, up to SAGA_REDRIVE_MAX.
    SAGA_REDRIVE_AFTER: PositiveDuration = 10.0
    SAGA_REDRIVE_MAX: PositiveDuration = 60.0
    # How often one replica (whichever takes the lock) looks for overdue orders, and how
    # many it re-announces at most per look.
    SAGA_REDRIVE_INTERVAL: PositiveDuration = 2.0
    SAGA_REDRIVE_BATCH: Annotated[int, Field(ge=1, le=10_000)] = 200
