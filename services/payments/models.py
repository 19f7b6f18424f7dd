"""Payloads of payments: the payment record and the data of the event it consumes. Amounts
are integer cents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field

M = TypeVar("M", bound=BaseModel)


class Payment(BaseModel):
    order_id: str
    customer_id: str
    amount: int = Field(description="cents")
    status: Literal["SUCCEEDED", "FAILED"]
    reason: str | None = Field(
        None, description="why it failed: card_declined (random) or forced_failure"
    )
    attempted_at: datetime


class ReservedData(BaseModel):
    customer_id: str
    total: Annotated[int, Field(ge=0)]
