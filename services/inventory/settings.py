"""Settings of the inventory service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import Duration, ServiceSettings

# A duration that must be more than zero (a zero interval would spin).
PositiveDuration = Annotated[Duration, Field(gt=0)]


class InventorySettings(ServiceSettings):
    SERVICE_NAME: str = "inventory"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8102
    # Units of each SKU when it is first seeded; a restart never resets stock.
    INVENTORY_INITIAL_STOCK: Annotated[int, Field(ge=0, le=1_000_000_000)] = 1000
    # How often the catalogue is checked, and seeded again if Redis lost it.
    INVENTORY_CATALOG_CHECK: PositiveDuration = 2.0
    # The saga re-drive of held reservations (README "Re-drive"), the same variables as the
    # orders service's: a reservation still waiting for its payment's outcome this long is
    # announced again; each later wait doubles, up to SAGA_REDRIVE_MAX.
    SAGA_REDRIVE_AFTER: PositiveDuration = 10.0
    SAGA_REDRIVE_MAX: PositiveDuration = 60.0
    SAGA_REDRIVE_INTERVAL: PositiveDuration = 2.0
    SAGA_REDRIVE_BATCH: Annotated[int, Field(ge=1, le=10_000)] = 200
