"""Payloads of the orders service: what clients send, what they get back, and the data of
the events it consumes. Amounts are integer cents everywhere."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from services.common.validation import INTEGRAL

# No ":" so that "<customer>:<key>" Redis key names cannot collide.
CustomerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", examples=["c-1"])]
Sku = Annotated[str, Field(min_length=1, max_length=64, examples=["SKU-001"])]
OrderId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
Status = Literal["PENDING", "CONFIRMED", "CANCELLED"]
M = TypeVar("M", bound=BaseModel)

MAX_LINES = 50
MAX_QUANTITY = 100


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), INTEGRAL]


class OrderIn(BaseModel):
    """``POST /orders``. A SKU appears on one line only (a duplicate is a 422, not merged:
    the client's intent is ambiguous and merging could exceed the per-line limit)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    customer_id: CustomerId
    items: Annotated[list[LineIn], Field(min_length=1, max_length=MAX_LINES)]

    @field_validator("items")
    @classmethod
    def _one_line_per_sku(cls, items: list[LineIn]) -> list[LineIn]:
        seen: set[str] = set()
        for line in items:
            if line.sku in seen:
                raise PydanticCustomError(
                    "duplicate_sku",
                    "sku {sku} appears on more than one line; put its whole quantity on one line",
                    {"sku": line.sku},
                )
            seen.add(line.sku)
        return items


class Line(BaseModel):
    sku: str
    quantity: int
    price: int = Field(description="unit price in cents at the time of the order")


class TimelineEntry(BaseModel):
    status: Status
    at: datetime
    reason: str | None = None


class Order(BaseModel):
    id: str
    customer_id: str
    status: Status
    reason: str | None = None
    items: list[Line]
    total: int = Field(description="cents")
    created_at: datetime
    updated_at: datetime
    timeline: list[TimelineEntry]


class OrderPage(BaseModel):
    orders: list[Order]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class OrderQuery(BaseModel):
    customer_id: CustomerId
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: OrderId | None = None


# --- events consumed ------------------------------------------------------------------------


class RejectedData(BaseModel):
    reason: str = "out_of_stock"


class PaymentData(BaseModel):
    reason: str | None = None


def iso(at: datetime) -> str:
    """How times are stored and sent in events: UTC, microseconds, ``Z``."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_order_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by creation time (the per-customer index relies
    on it for newest-first pages)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (rand >> 62) & 0xFFF, rand & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
