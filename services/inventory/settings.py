"""Settings of the inventory service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    SERVICE_NAME: str = "inventory"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8102
    # Units of each SKU when it is first seeded; a restart never resets stock.
    INVENTORY_INITIAL_STOCK: Annotated[int, Field(ge=0, le=1_000_000_000)] = 1000
