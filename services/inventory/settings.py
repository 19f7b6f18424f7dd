"""Settings of the inventory service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode

from services.common.settings import Duration, ServiceSettings

# A duration that must be more than zero (a zero interval would spin).
PositiveDuration = Annotated[Duration, Field(gt=0)]
MAX_UNITS = 1_000_000_000


class RestockPolicy(BaseModel):
    """Every ``every`` seconds, each SKU with fewer than ``level`` units available gets back
    up to ``level`` (reserved and sold units are left alone)."""

    model_config = ConfigDict(frozen=True)

    level: Annotated[int, Field(ge=1, le=MAX_UNITS)]
    every: PositiveDuration

    def __str__(self) -> str:
        return f"{self.level} every {self.every:g}s"


_RESTOCK = re.compile(r"^\s*(\S+)\s+every\s+(\S+)\s*$")


def _restock(value: Any) -> Any:
    """``off`` -> None; ``1000 every 30s`` -> its level and interval, validated next."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() == "off":
        return None
    match = _RESTOCK.match(value)
    if match is None:
        raise ValueError('expected "off" or "<level> every <interval>", such as "1000 every 30s"')
    return {"level": match.group(1), "every": match.group(2)}


class InventorySettings(ServiceSettings):
    SERVICE_NAME: str = "inventory"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8102
    # Units of each SKU when it is first seeded; a restart never resets stock.
    INVENTORY_INITIAL_STOCK: Annotated[int, Field(ge=0, le=MAX_UNITS)] = 1000
    # "off", or "<level> every <interval>": each SKU below the level is brought back up to it
    # every interval, announced as inventory.restocked (README "Restock"). Off by default;
    # the local runtime and the compose stack turn it on.
    INVENTORY_RESTOCK: Annotated[RestockPolicy | None, NoDecode, BeforeValidator(_restock)] = None
    # How often the catalogue is checked, and seeded again if Redis lost it.
    INVENTORY_CATALOG_CHECK: PositiveDuration = 2.0
    # The saga re-drive of held reservations (README "Re-drive"), the same variables as the
    # orders service's: a reservation still waiting for its payment's outcome this long is
    # announced again; each later wait doubles, up to SAGA_REDRIVE_MAX.
    SAGA_REDRIVE_AFTER: PositiveDuration = 10.0
    SAGA_REDRIVE_MAX: PositiveDuration = 60.0
    SAGA_REDRIVE_INTERVAL: PositiveDuration = 2.0
    SAGA_REDRIVE_BATCH: Annotated[int, Field(ge=1, le=10_000)] = 200
