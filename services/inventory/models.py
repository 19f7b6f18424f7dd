"""Payloads of inventory: stock as clients see it, the admin update, and the data of the
events it consumes. Prices are integer cents."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from services.common.validation import INTEGRAL

M = TypeVar("M", bound=BaseModel)


class Product(BaseModel):
    """One entry of the seeded catalogue (``catalog.json``)."""

    sku: Annotated[str, Field(pattern=r"^[A-Z0-9-]{1,64}$")]
    name: Annotated[str, Field(min_length=1)]
    price: Annotated[int, Field(ge=0, description="cents")]


class StockItem(BaseModel):
    sku: str
    name: str
    price: int = Field(description="unit price in cents")
    available: int = Field(description="units that can be reserved")
    reserved: int = Field(description="units held for orders awaiting payment")
    sold: int = Field(description="units of paid orders")


class StockList(BaseModel):
    stock: list[StockItem]


class StockUpdate(BaseModel):
    """``PUT /stock/{sku}``: sets the available units (reservations in progress are kept)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    available: Annotated[int, Field(ge=0, le=1_000_000_000), INTEGRAL]


# --- events consumed ------------------------------------------------------------------------


class OrderLine(BaseModel):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1)]
    price: Annotated[int, Field(ge=0)]


class OrderCreatedData(BaseModel):
    customer_id: str
    items: Annotated[list[OrderLine], Field(min_length=1)]
    total: Annotated[int, Field(ge=0)]
